"""The rendered Kubernetes manifests keep the promises of issue 6 and design.md section 6.

Every test runs on every overlay (deploy/overlays/*), as `task deploy:render` prints it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO, Rendered
from weather_api.settings import Settings

OBSERVABILITY = REPO / "observability"
LOADTEST = REPO / "loadtest"


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Init and regular containers of a pod spec."""
    return [*pod.get("initContainers", []), *pod["containers"]]


# ---- autoscaling, rollout, disruption ---------------------------------------------------------


MIN_REPLICAS = {"local": 1, "gke": 2}
"""The assignment's 1..3 everywhere but GKE, which keeps two pods through a drain (deploy/README.md)."""


def test_hpa_scales_the_api_up_to_3_at_30_percent_cpu_up_at_once_down_after_five_minutes(
    rendered: Rendered,
) -> None:
    """The HPA targets the API Deployment: 1 (gke: 2) to 3 replicas at 30% CPU; up at once, down after 5 min."""
    hpa = rendered.get("HorizontalPodAutoscaler", "weather-api")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "weather-api"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (MIN_REPLICAS[rendered.overlay], 3)
    assert spec["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 30}}}
    ]
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert spec["behavior"]["scaleUp"]["policies"]
    # deploy/README.md: "down after five quiet minutes".
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_api_rolls_out_without_losing_capacity_and_stops_gracefully(rendered: Rendered) -> None:
    """MaxUnavailable 0, no replicas field (the HPA owns it), preStop sleep and a grace period."""
    deployment = rendered.get("Deployment", "weather-api")
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pre_stop = int(api["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop


def test_api_probes_ready_for_startup_and_readiness_and_health_for_liveness(rendered: Rendered) -> None:
    """/ready gates traffic (Valkey reachable, library loaded); /health only restarts a dead process."""
    (api,) = rendered.get("Deployment", "weather-api")["spec"]["template"]["spec"]["containers"]
    assert api["startupProbe"]["httpGet"]["path"] == "/ready"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]  # noqa: S104 - a pod's own address
    assert {"name": "http", "containerPort": 8000} in api["ports"]


def test_disruption_budgets_take_one_pod_at_a_time_and_never_block_a_drain(rendered: Rendered) -> None:
    """One PDB each for the API, Valkey and the Sentinels: one pod at a time, never `minAvailable`.

    `minAvailable: 1` on a single API replica blocked every node drain.
    """
    budgets = {pdb["metadata"]["name"]: pdb["spec"] for pdb in rendered.of_kind("PodDisruptionBudget")}
    assert budgets["weather-api"]["maxUnavailable"] == 1
    assert all("minAvailable" not in budget for budget in budgets.values())
    assert budgets["valkey"]["maxUnavailable"] == 1
    assert budgets["valkey-sentinel"]["maxUnavailable"] == 1


# ---- every container: resources, probes, security ---------------------------------------------


def test_every_container_has_cpu_and_memory_requests_and_limits(rendered: Rendered) -> None:
    """No container without requests and limits for both CPU and memory."""
    for workload, pod in rendered.pod_specs():
        for container in containers(pod):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert set(resources.get(kind, {})) >= {"cpu", "memory"}, (workload, container["name"], kind)


def test_every_serving_container_has_readiness_and_liveness_probes(rendered: Rendered) -> None:
    """A container that listens on a port says when it is ready and when it is stuck."""
    for workload, pod in rendered.pod_specs():
        for container in pod["containers"]:
            if container.get("ports"):
                assert "readinessProbe" in container, (workload, container["name"])
                assert "livenessProbe" in container, (workload, container["name"])


def test_every_pod_runs_as_non_root_read_only_without_capabilities(rendered: Rendered) -> None:
    """Pod Security "restricted": non-root UID, seccomp, no privilege escalation, no capabilities."""
    namespace = rendered.get("Namespace", "weather")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload, pod in rendered.pod_specs():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, workload
        assert security["runAsUser"] > 0, workload
        assert security["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert pod.get("hostNetwork") is not True, workload
        for container in containers(pod):
            context = container["securityContext"]
            assert context.get("runAsUser", security["runAsUser"]) > 0, (workload, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (workload, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (workload, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (workload, container["name"])
            assert "add" not in context["capabilities"], (workload, container["name"])


def test_only_prometheus_mounts_a_service_account_token(rendered: Rendered) -> None:
    """Tokens only where the Kubernetes API is used: Prometheus' pod discovery, read-only."""
    for workload, pod in rendered.pod_specs():
        expected = workload == "prometheus"
        assert pod["automountServiceAccountToken"] is expected, workload
    for account in rendered.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is (account["metadata"]["name"] == "prometheus")
    (role,) = rendered.of_kind("Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert not rendered.of_kind("ClusterRole")


def test_every_image_is_pinned(rendered: Rendered) -> None:
    """Images carry a version tag: no `latest`, no bare names."""
    for workload, pod in rendered.pod_specs():
        for container in containers(pod):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag, (workload, image)
            assert tag != "latest", (workload, image)


def test_everything_lives_in_the_weather_namespace(rendered: Rendered) -> None:
    """One namespace, so that `task deploy:delete` removes everything."""
    for obj in rendered.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "weather", (obj["kind"], obj["metadata"]["name"])


# ---- Ingress --------------------------------------------------------------------------------


def test_ingress_exposes_the_api_and_docs_but_not_metrics(rendered: Rendered) -> None:
    """NGINX routes the API and /schema; /metrics and /ready match no path; limits are set."""
    ingress = rendered.get("Ingress", "weather-api")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    paths = {(p["path"], p["pathType"]) for p in rule["http"]["paths"]}
    assert ("/api", "Prefix") in paths
    assert ("/schema", "Prefix") in paths

    def routed(url: str) -> bool:
        return any(url == p or (kind == "Prefix" and url.startswith(p.rstrip("/") + "/")) for p, kind in paths)

    for public in (
        "/api/weather",
        "/api/weather/batch",
        "/api/municipalities/mixco",
        "/stats",
        "/averages",
        "/schema",
        "/schema/swagger",
    ):
        assert routed(public), public
    for private in ("/metrics", "/ready", "/", "/metrics/"):
        assert not routed(private), private
    for p in rule["http"]["paths"]:
        assert p["backend"]["service"] == {"name": "weather-api", "port": {"name": "http"}}


def test_ingress_limits_bodies_to_128_kib_and_pod_times_to_5_10_10_seconds(rendered: Rendered) -> None:
    """The values deploy/README.md promises: 128 KiB bodies (above the API's own limit), 5/10/10 s to a pod."""
    annotations = rendered.get("Ingress", "weather-api")["metadata"]["annotations"]
    nginx = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in annotations.items()}
    assert nginx["proxy-body-size"] == "128k"
    # Above the API's limit, so that the API's own 413 problem document is what clients see.
    assert Settings().max_body_bytes < 128 * 1024
    assert nginx["client-body-buffer-size"] == "128k"
    assert (nginx["proxy-connect-timeout"], nginx["proxy-send-timeout"], nginx["proxy-read-timeout"]) == (
        "5",
        "10",
        "10",
    )
    assert nginx["proxy-next-upstream"] == "off"


INGRESS_NGINX_UPSTREAM_KEEPALIVE_TIMEOUT = 60
"""ingress-nginx's `upstream-keepalive-timeout` default, in seconds (kubernetes/ingress-nginx,
internal/ingress/controller/config/config.go, `NewDefault`); none of our manifests changes it."""


def test_the_api_keeps_idle_connections_longer_than_ingress_nginx(rendered: Rendered) -> None:
    """The proxy closes an idle upstream connection first: it never reuses one the API is closing (a 502)."""
    (api,) = rendered.get("Deployment", "weather-api")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in api["env"]}
    settings = Settings.from_env({"WEATHER_KEEP_ALIVE_TIMEOUT": env["WEATHER_KEEP_ALIVE_TIMEOUT"]})
    assert settings.keep_alive_timeout > INGRESS_NGINX_UPSTREAM_KEEPALIVE_TIMEOUT
    assert not any("keepalive" in key for key in rendered.get("Ingress", "weather-api")["metadata"]["annotations"])


def test_the_gke_ingress_has_tls_and_a_per_client_rate_limit(rendered_all: dict[str, Rendered]) -> None:
    """cert-manager's certificate for the host, HTTP redirected to HTTPS, 20 req/s (bursts of 100), 20 connections."""
    ingress = rendered_all["gke"].get("Ingress", "weather-api")
    annotations = ingress["metadata"]["annotations"]
    (rule,) = ingress["spec"]["rules"]
    assert ingress["spec"]["tls"] == [{"hosts": [rule["host"]], "secretName": "weather-api-tls"}]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    nginx = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in annotations.items()}
    assert nginx["force-ssl-redirect"] == "true"
    assert (nginx["limit-rps"], nginx["limit-burst-multiplier"], nginx["limit-connections"]) == ("20", "5", "20")
    local = rendered_all["local"].get("Ingress", "weather-api")
    assert "tls" not in local["spec"]
    assert "nginx.ingress.kubernetes.io/limit-rps" not in local["metadata"]["annotations"]


# ---- Valkey and Sentinel --------------------------------------------------------------------


def test_valkey_is_a_primary_and_two_replicas_on_volumes_watched_by_three_sentinels(rendered: Rendered) -> None:
    """Three Valkey pods with persistent volumes and an exporter each; three Sentinels."""
    valkey = rendered.get("StatefulSet", "valkey")
    assert valkey["spec"]["replicas"] == 3
    (claim,) = valkey["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    names = [c["name"] for c in valkey["spec"]["template"]["spec"]["containers"]]
    assert names == ["valkey", "exporter"]
    sentinel = rendered.get("StatefulSet", "valkey-sentinel")
    assert sentinel["spec"]["replicas"] == 3
    config = (DEPLOY / "base" / "valkey" / "valkey.conf").read_text()
    assert re.search(r"^appendonly yes$", config, re.MULTILINE)
    assert re.search(r"^appendfsync everysec$", config, re.MULTILINE)
    # The Sentinels keep their state (last primary, epochs) on volumes of their own.
    (claim,) = sentinel["spec"]["volumeClaimTemplates"]
    (container,) = sentinel["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert "/data/sentinel.conf" in container["command"]


def test_valkey_may_evict_idempotency_records_but_never_aggregates(rendered: Rendered) -> None:
    """A maxmemory, and a policy that evicts only keys with a TTL (idempotency records), never aggregates."""
    config = rendered.get("ConfigMap", "valkey-config")["data"]["valkey.conf"]
    settings = dict(
        line.split(None, 1) for line in config.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    assert re.fullmatch(r"\d+(mb|gb)", settings["maxmemory"])
    assert settings["maxmemory-policy"] == "volatile-ttl"


def test_the_exporter_never_asks_for_the_configuration(rendered: Rendered) -> None:
    """redis_exporter runs without CONFIG GET (it would show masterauth; its ACL user may not anyway)."""
    pod = rendered.get("StatefulSet", "valkey")["spec"]["template"]["spec"]
    (exporter,) = [c for c in pod["containers"] if c["name"] == "exporter"]
    env = {item["name"]: item.get("value") for item in exporter["env"]}
    assert env["REDIS_EXPORTER_CONFIG_COMMAND"] == "-"
    assert env["REDIS_USER"] == "exporter"


def test_api_finds_the_primary_through_the_sentinels_without_a_literal_password(rendered: Rendered) -> None:
    """WEATHER_VALKEY_URL names the Sentinel service; its password is a kubelet $(VAR) reference."""
    (api,) = rendered.get("Deployment", "weather-api")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in api["env"]}
    url = env["WEATHER_VALKEY_URL"]["value"]
    assert url == (
        "redis+sentinel://api:$(VALKEY_API_PASSWORD)@valkey-sentinel:26379/weather"
        "?sentinel_username=api&sentinel_password=$(VALKEY_API_PASSWORD)"
    )
    reference = env["VALKEY_API_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert reference["name"] == rendered.get("Secret", "valkey-users")["metadata"]["name"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector:4318"
    # The kubelet expands $(VAR) only for variables defined earlier in the list.
    names = [item["name"] for item in api["env"]]
    assert names.index("VALKEY_API_PASSWORD") < names.index("WEATHER_VALKEY_URL")


def secret_keys(pod: dict[str, Any], secret: str) -> set[str]:
    """Keys of Secret `secret` (generated name) that a pod can read: env references and volumes."""
    keys: set[str] = set()
    for container in containers(pod):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"].startswith(f"{secret}-"):
                keys.add(ref["key"])
    for volume in pod.get("volumes", []):
        source = volume.get("secret")
        if source and source["secretName"].startswith(f"{secret}-"):
            keys |= {item["key"] for item in source["items"]} if "items" in source else {"*"}
    return keys


def test_only_the_valkey_pods_and_the_library_job_hold_the_admin_password(rendered: Rendered) -> None:
    """The API pods hold VALKEY_API_PASSWORD only; the admin credential that loads code is the Job's."""
    holders = {
        name for name, pod in rendered.pod_specs() if secret_keys(pod, "valkey-users") & {"*", "VALKEY_ADMIN_PASSWORD"}
    }
    assert holders == {"valkey", "valkey-library"}
    api = rendered.get("Deployment", "weather-api")["spec"]["template"]["spec"]
    assert secret_keys(api, "valkey-users") == {"VALKEY_API_PASSWORD"}
    sentinel = rendered.get("StatefulSet", "valkey-sentinel")["spec"]["template"]["spec"]
    assert secret_keys(sentinel, "valkey-users") == {"VALKEY_SENTINEL_PASSWORD", "VALKEY_API_PASSWORD"}
    (job,) = rendered.get("Job", "valkey-library")["spec"]["template"]["spec"]["containers"]
    assert job["args"] == ["load-library"]
    env = {item["name"]: item for item in job["env"]}
    assert env["WEATHER_VALKEY_URL"]["value"].startswith("redis+sentinel://admin:$(VALKEY_ADMIN_PASSWORD)@")


# ---- secrets --------------------------------------------------------------------------------


def test_secrets_come_only_from_the_git_ignored_generator_inputs(rendered: Rendered) -> None:
    """The only Secrets are the generated ones, holding exactly the keys of the *.env.example files."""
    examples = {
        path.name.removesuffix(".env.example"): path for path in (DEPLOY / "base" / "secrets").glob("*.env.example")
    }
    expected = {"valkey-users": examples["valkey"], "grafana-admin": examples["grafana"]}
    generated = rendered.of_kind("Secret")
    assert len(generated) == len(expected)
    for name, example in expected.items():
        secret = rendered.get("Secret", name)
        assert re.fullmatch(rf"{name}-[a-z0-9]{{10}}", secret["metadata"]["name"]), "not from a generator"
        keys = {line.split("=", 1)[0] for line in example.read_text().splitlines() if line and not line.startswith("#")}
        assert set(secret["data"]) == keys
    ignored = (REPO / ".gitignore").read_text()
    assert "deploy/**/secrets/*.env" in ignored.splitlines()


def test_no_secret_value_appears_outside_its_secret(rendered: Rendered) -> None:
    """The generator inputs' values reach the cluster only inside the Secret objects."""
    outside = yaml.safe_dump_all([obj for obj in rendered.objects if obj["kind"] != "Secret"])
    for key, value in rendered.secret_values.items():
        assert value not in outside, key


def test_no_password_looking_environment_variable_has_a_literal_value(rendered: Rendered) -> None:
    """Variables named like credentials come from a Secret (or hold a $(VAR) reference / a file path)."""
    credential = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|CREDENTIAL|_URL$", re.IGNORECASE)
    for workload, pod in rendered.pod_specs():
        for container in containers(pod):
            for item in container.get("env", []):
                if not credential.search(item["name"]) or "value" not in item:
                    continue
                value = item["value"]
                if item["name"].endswith("__FILE"):
                    assert value.startswith("/"), (workload, item["name"])
                    continue
                # A URL may carry credentials only as a reference to a Secret-backed variable.
                userinfo = re.match(r"^[a-z+]+://([^@/]*)@", value)
                if userinfo:
                    assert re.fullmatch(r"[a-z]+:\$\([A-Z_]+\)", userinfo.group(1)), (workload, item["name"])
                    for password in re.findall(r"[?&]\w*password=([^&]*)", value):
                        assert re.fullmatch(r"\$\([A-Z_]+\)", password), (workload, item["name"])
                else:
                    assert "PASSWORD" not in item["name"].upper(), (workload, item["name"])


def test_no_secret_is_written_in_a_source_manifest() -> None:
    """deploy/ defines no Secret object by hand: kustomize's secretGenerator makes them."""
    for path in DEPLOY.rglob("*.yaml"):
        for obj in yaml.safe_load_all(path.read_text()):
            if isinstance(obj, dict):
                assert obj.get("kind") != "Secret", path


# ---- one source of truth: observability/ and loadtest/ in ConfigMaps ----------------------------


def config_files(rendered: Rendered, name: str) -> dict[str, str]:
    """The data of a generated ConfigMap."""
    return rendered.get("ConfigMap", name)["data"]


def test_prometheus_config_rules_and_alerts_equal_the_observability_files(rendered: Rendered) -> None:
    """prometheus.k8s.yml, rules/*.yml and alerts/*.yml reach Prometheus byte for byte, all of them."""
    prometheus = OBSERVABILITY / "prometheus"
    assert config_files(rendered, "prometheus-config") == {
        "prometheus.yml": (prometheus / "prometheus.k8s.yml").read_text()
    }
    for folder in ("rules", "alerts"):
        files = {path.name: path.read_text() for path in sorted((prometheus / folder).glob("*.yml"))}
        assert files, folder
        assert config_files(rendered, f"prometheus-{folder}") == files, f"observability/prometheus/{folder}"


def test_grafana_provisioning_and_dashboards_equal_the_observability_files(rendered: Rendered) -> None:
    """Data sources, dashboard providers and every dashboard JSON reach Grafana byte for byte."""
    grafana = OBSERVABILITY / "grafana"
    expected = {
        "grafana-datasources": grafana / "provisioning" / "datasources",
        "grafana-dashboard-providers": grafana / "provisioning" / "dashboards",
    }
    for name, folder in expected.items():
        files = {path.name: path.read_text() for path in sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml"))}
        assert files, folder
        assert config_files(rendered, name) == files, folder
    dashboards = {path.name: path.read_text() for path in sorted((grafana / "dashboards").glob("*.json"))}
    assert dashboards
    assert config_files(rendered, "grafana-dashboards") == dashboards


def test_grafana_settings_equal_grafana_env(rendered: Rendered) -> None:
    """observability/grafana/grafana.env becomes the grafana-env ConfigMap, entry for entry."""
    entries = {}
    for line in (OBSERVABILITY / "grafana" / "grafana.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            entries[key.strip()] = value
    assert config_files(rendered, "grafana-env") == entries
    assert entries["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in entries


def test_grafana_image_is_the_version_observability_pins(rendered: Rendered) -> None:
    """The pod runs our Grafana image, tagged with the versions its Dockerfile pins."""
    dockerfile = (OBSERVABILITY / "grafana" / "image" / "Dockerfile").read_text()
    pins = dict(re.findall(r"^ARG (GRAFANA_VERSION|REDIS_DATASOURCE_VERSION)=(\S+)$", dockerfile, re.MULTILINE))
    (grafana,) = rendered.get("Deployment", "grafana")["spec"]["template"]["spec"]["containers"]
    tag = f"{pins['GRAFANA_VERSION']}-redis-datasource-{pins['REDIS_DATASOURCE_VERSION']}"
    assert grafana["image"] == f"weather-api-grafana:{tag}"


def test_locust_runs_the_whole_loadtest_package(rendered: Rendered) -> None:
    """Every loadtest/*.py is in the ConfigMap that master and workers mount."""
    files = {path.name: path.read_text() for path in sorted(LOADTEST.glob("*.py"))}
    assert "locustfile.py" in files
    assert config_files(rendered, "locust-loadtest") == files


def mounts(rendered: Rendered, workload: str, container: str) -> dict[str, str]:
    """MountPath -> ConfigMap/Secret name (without hash) of one container."""
    pod = rendered.get("Deployment", workload)["spec"]["template"]["spec"]
    volumes = {}
    for volume in pod["volumes"]:
        source = volume.get("configMap", {}).get("name") or volume.get("secret", {}).get("secretName") or "emptyDir"
        volumes[volume["name"]] = re.sub(r"-[a-z0-9]{10}$", "", source)
    (spec,) = [c for c in pod["containers"] if c["name"] == container]
    return {m["mountPath"]: volumes[m["name"]] for m in spec["volumeMounts"]}


def test_prometheus_finds_its_configuration_where_prometheus_k8s_yml_says(rendered: Rendered) -> None:
    """The config file, with rules/ and alerts/ beside it (relative rule_files), and exemplars on."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus" / "prometheus.k8s.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml", "alerts/*.yml"]
    assert mounts(rendered, "prometheus", "prometheus") == {
        "/etc/prometheus/prometheus.yml": "prometheus-config",
        "/etc/prometheus/rules": "prometheus-rules",
        "/etc/prometheus/alerts": "prometheus-alerts",
        "/prometheus": "emptyDir",
    }
    (prometheus,) = rendered.get("Deployment", "prometheus")["spec"]["template"]["spec"]["containers"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["args"]
    assert "--enable-feature=exemplar-storage" in prometheus["args"]


def test_grafana_finds_provisioning_and_dashboards_where_the_provider_says(rendered: Rendered) -> None:
    """Provisioning folders and the dashboard provider's path are the mounted ConfigMaps."""
    providers = yaml.safe_load(
        (OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )
    paths = {provider["options"]["path"] for provider in providers["providers"]}
    found = mounts(rendered, "grafana", "grafana")
    assert found["/etc/grafana/provisioning/datasources"] == "grafana-datasources"
    assert found["/etc/grafana/provisioning/dashboards"] == "grafana-dashboard-providers"
    for path in paths:
        assert found[path] == "grafana-dashboards"
    home = config_files(rendered, "grafana-env").get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        folder, _, name = home.rpartition("/")
        assert found[folder] == "grafana-dashboards"
        assert name in config_files(rendered, "grafana-dashboards")


def test_grafana_gets_every_variable_its_data_sources_use(rendered: Rendered) -> None:
    """Each $__env{VAR} of the data source provisioning is set on the Grafana container."""
    text = (OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    wanted = set(re.findall(r"\$__env\{(\w+)\}", code))
    assert wanted
    (grafana,) = rendered.get("Deployment", "grafana")["spec"]["template"]["spec"]["containers"]
    defined = {item["name"] for item in grafana["env"]} | set(config_files(rendered, "grafana-env"))
    assert wanted <= defined, wanted - defined


# ---- Prometheus discovery and the network policies agree ---------------------------------------


def prometheus_jobs() -> dict[str, tuple[str, str]]:
    """Job -> (app.kubernetes.io/name it keeps, container port name it keeps), from prometheus.k8s.yml."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus" / "prometheus.k8s.yml").read_text())
    jobs = {}
    for job in config["scrape_configs"]:
        keep = {
            tuple(rule["source_labels"]): rule["regex"]
            for rule in job.get("relabel_configs", [])
            if rule.get("action") == "keep"
        }
        name = keep.get(("__meta_kubernetes_pod_label_app_kubernetes_io_name",))
        port = keep.get(("__meta_kubernetes_pod_container_port_name",))
        if name and port:
            jobs[job["job_name"]] = (name, port)
    return jobs


def test_prometheus_discovers_the_api_valkey_and_locust_pods(rendered: Rendered) -> None:
    """Each job of prometheus.k8s.yml matches pods of the render, with a port of the expected name."""
    jobs = prometheus_jobs()
    assert set(jobs) == {"weather-api", "valkey", "locust"}
    expected_ports = {"weather-api": {8000}, "valkey": {9121}, "locust": {9646, 9647}}
    for job, (app, port_name) in jobs.items():
        ports = set()
        for _, pod, labels in pods(rendered):
            if labels.get("app.kubernetes.io/name") == app:
                ports |= {
                    p["containerPort"]
                    for c in pod["containers"]
                    for p in c.get("ports", [])
                    if p.get("name") == port_name
                }
        assert ports == expected_ports[job], job


def pods(rendered: Rendered) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(workload, pod spec, pod labels) of every workload."""
    return [
        (obj["metadata"]["name"], obj["spec"]["template"]["spec"], obj["spec"]["template"]["metadata"]["labels"])
        for obj in rendered.workloads()
    ]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels only, as ours are) selects these labels."""
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def port_matches(rule_ports: list[dict[str, Any]] | None, port: int, dst_pod: dict[str, Any] | None) -> bool:
    """Whether a rule's port list allows TCP `port` (named ports resolved on the destination pod)."""
    if not rule_ports:
        return True
    names = {}
    if dst_pod is not None:
        names = {
            p["name"]: p["containerPort"] for c in dst_pod["containers"] for p in c.get("ports", []) if "name" in p
        }
    for rule in rule_ports:
        if rule.get("protocol", "TCP") != "TCP":
            continue
        wanted = rule.get("port")
        if wanted is None or wanted == port or names.get(wanted) == port:
            return True
    return False


def peer_matches(peers: list[dict[str, Any]] | None, labels: dict[str, str]) -> bool:
    """Whether a rule's from/to list includes a pod of this namespace with these labels."""
    if not peers:
        return True
    return any(
        "podSelector" in peer and "namespaceSelector" not in peer and selects(peer["podSelector"], labels)
        for peer in peers
    )


def allowed(rendered: Rendered, src: str, dst: str, port: int) -> bool:
    """Whether a pod of workload `src` may open a TCP connection to a pod of workload `dst` on `port`."""
    by_name = {name: (pod, labels) for name, pod, labels in pods(rendered)}
    src_pod, src_labels = by_name[src]
    dst_pod, dst_labels = by_name[dst]
    policies = [p["spec"] for p in rendered.of_kind("NetworkPolicy")]
    egress = [p for p in policies if "Egress" in p["policyTypes"] and selects(p["podSelector"], src_labels)]
    ingress = [p for p in policies if "Ingress" in p["policyTypes"] and selects(p["podSelector"], dst_labels)]
    out = any(
        peer_matches(rule.get("to"), dst_labels) and port_matches(rule.get("ports"), port, dst_pod)
        for policy in egress
        for rule in policy.get("egress", [])
    )
    into = any(
        peer_matches(rule.get("from"), src_labels) and port_matches(rule.get("ports"), port, dst_pod)
        for policy in ingress
        for rule in policy.get("ingress", [])
    )
    assert src_pod is not None
    return out and into


NEEDED = [
    ("valkey-library", "valkey-sentinel", 26379),
    ("valkey-library", "valkey", 6379),
    ("weather-api", "valkey-sentinel", 26379),
    ("weather-api", "valkey", 6379),
    ("weather-api", "otel-collector", 4318),
    ("valkey", "valkey", 6379),
    ("valkey", "valkey-sentinel", 26379),
    ("valkey-sentinel", "valkey", 6379),
    ("valkey-sentinel", "valkey-sentinel", 26379),
    ("otel-collector", "tempo", 4317),
    ("prometheus", "weather-api", 8000),
    ("prometheus", "valkey", 9121),
    ("prometheus", "locust-master", 9646),
    ("prometheus", "locust-worker", 9647),
    ("grafana", "prometheus", 9090),
    ("grafana", "tempo", 3200),
    ("grafana", "valkey", 6379),
    ("locust-worker", "locust-master", 5557),
    ("locust-worker", "weather-api", 8000),
]
FORBIDDEN = [
    ("locust-worker", "valkey", 6379),
    ("locust-master", "valkey-sentinel", 26379),
    ("grafana", "weather-api", 8000),
    ("tempo", "valkey", 6379),
    ("otel-collector", "prometheus", 9090),
    ("weather-api", "prometheus", 9090),
    ("weather-api", "grafana", 3000),
    ("locust-worker", "grafana", 3000),
    ("weather-api", "valkey", 9121),
    ("valkey-library", "weather-api", 8000),
    ("weather-api", "valkey-library", 8000),
]


def test_network_policies_deny_by_default(rendered: Rendered) -> None:
    """A policy selecting every pod allows nothing in or out; DNS is the only blanket allowance."""
    policies = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, spec in policies.items():
        if spec["podSelector"] == {} and name != "default-deny":
            assert name == "allow-dns"
            assert spec["policyTypes"] == ["Egress"]
            assert {p["port"] for rule in spec["egress"] for p in rule["ports"]} == {53}
    for workload, _, labels in pods(rendered):
        own = [n for n, s in policies.items() if s["podSelector"] != {} and selects(s["podSelector"], labels)]
        assert own, f"{workload} has no policy of its own"


@pytest.mark.parametrize(("src", "dst", "port"), NEEDED)
def test_network_policies_allow_every_needed_connection(rendered: Rendered, src: str, dst: str, port: int) -> None:
    """Each connection the system makes is allowed at both ends."""
    assert allowed(rendered, src, dst, port)


@pytest.mark.parametrize(("src", "dst", "port"), FORBIDDEN)
def test_network_policies_refuse_connections_nobody_needs(rendered: Rendered, src: str, dst: str, port: int) -> None:
    """Pods cannot reach what they have no business with (the load generator cannot touch Valkey)."""
    assert not allowed(rendered, src, dst, port)


def test_only_ingress_nginx_reaches_the_api_from_outside_the_namespace(rendered: Rendered) -> None:
    """Namespace selectors appear once: ingress-nginx's namespace, to the API's HTTP port."""
    for policy in rendered.of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    assert policy["metadata"]["name"] == "weather-api"
                    assert peer["namespaceSelector"] == {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }


# ---- overlays -------------------------------------------------------------------------------


def test_overlays_differ_only_where_the_environment_does(rendered_all: dict[str, Rendered]) -> None:
    """Local and gke render the same objects; gke pulls our images Always and uses SSD volumes.

    (gke's Ingress and HPA: the Ingress and HPA tests.)
    """
    kinds = {
        name: sorted(
            (
                o["kind"],
                o["metadata"]["name"].rsplit("-", 1)[0]
                if o["kind"] in {"ConfigMap", "Secret"}
                else o["metadata"]["name"],
            )
            for o in r.objects
        )
        for name, r in rendered_all.items()
    }
    assert kinds["local"] == kinds["gke"]
    gke = rendered_all["gke"]
    for kind, name in (("Deployment", "weather-api"), ("Job", "valkey-library")):
        (ours,) = gke.get(kind, name)["spec"]["template"]["spec"]["containers"]
        assert ours["imagePullPolicy"] == "Always", name
    (claim,) = gke.get("StatefulSet", "valkey")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    local = rendered_all["local"]
    assert local.get("Ingress", "weather-api")["spec"]["rules"][0]["host"] == "localhost"
    (api,) = local.get("Deployment", "weather-api")["spec"]["template"]["spec"]["containers"]
    assert api["image"] == "weather-api:dev"


KUSTOMIZATIONS = sorted(
    [
        *DEPLOY.rglob("kustomization.yaml"),
        OBSERVABILITY / "prometheus" / "kustomization.yaml",
        OBSERVABILITY / "grafana" / "kustomization.yaml",
        LOADTEST / "kustomization.yaml",
    ]
)


def test_no_kustomization_reads_a_file_outside_its_folder() -> None:
    """Kustomize's default load restrictor holds: generators and patches read only their own folder's files.

    Folders outside (observability/, loadtest/) come in as resources with kustomizations of
    their own, so `kubectl apply -k deploy/overlays/<name>` works without
    `--load-restrictor LoadRestrictionsNone` (the fixtures render that way, too).
    """
    for path in KUSTOMIZATIONS:
        spec = yaml.safe_load(path.read_text())
        files = [p["path"] for p in spec.get("patches", []) if "path" in p]
        for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
            files += [f.split("=", 1)[-1] for f in generator.get("files", [])] + generator.get("envs", [])
        for file in files:
            assert (path.parent / file).resolve().is_relative_to(path.parent), f"{path.relative_to(REPO)}: {file}"


def test_every_kustomization_lists_only_files_that_exist() -> None:
    """No kustomization references a missing file (kustomize would fail, but later and vaguer)."""
    for path in KUSTOMIZATIONS:
        spec = yaml.safe_load(path.read_text())
        entries = list(spec.get("resources", []))
        for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
            entries += [f.split("=", 1)[-1] for f in generator.get("files", [])]
            entries += [e for e in generator.get("envs", []) if "secrets/" not in e]
        entries += [p["path"] for p in spec.get("patches", []) if "path" in p]
        for entry in entries:
            assert (path.parent / entry).exists(), f"{path.relative_to(REPO)}: {entry}"


def test_shell_scripts_are_posix_and_strict() -> None:
    """The start scripts run under the images' /bin/sh (dash or busybox): no bashisms, set -eu."""
    for script in sorted(DEPLOY.rglob("*.sh")):
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n"), script
        assert re.search(r"^set -e?u$|^set -eu$|^set -u$", text, re.MULTILINE), script
        assert "[[" not in text, script
        assert not re.search(r"^function |\$\{[A-Za-z_]+\[|<<<", text, re.MULTILINE), script
