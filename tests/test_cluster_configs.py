"""The cluster configuration files in cluster/, checked without starting a cluster.

- Ray cluster launcher YAMLs (aws, gcp, local): Ray's own ``prepare_config`` + ``validate_config``,
  then what a user would notice: the nodes install streamfit, the head starts Ray and then the
  pipeline, Serve's environment is set before ``ray start``, autoscaling bounds make sense, and
  every command is valid shell.
- The Serve config (``serve deploy``) and the RayService's ``serveConfigV2``:
  ``ServeDeploySchema.model_validate`` plus a field-name check at every level (the schema
  silently drops unknown fields), and Serve's own import + build of the application from the
  cluster streamfit config, whose deployments and options must match the config.
- KubeRay RayCluster / RayService manifests: kinds, required fields, replicas bounds, the admin
  token from a Secret, the upgrade strategy as KubeRay's validation accepts it.
- cluster/streamfit-cluster.yaml: loads with streamfit's ``load_config``; registry and
  checkpoints on object storage.

Each check is a function returning a list of problems; the negative tests feed it a broken copy
and expect the problem to be named.
"""

from __future__ import annotations

import json
import copy
import re
import shutil
import subprocess
import textwrap
import typing
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pydantic
import pytest
import ray
import yaml
from pydantic import BaseModel
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

from streamfit.config import load_config
from streamfit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
STREAMFIT_CLUSTER_CONFIG = CLUSTER / "streamfit-cluster.yaml"
LAUNCHERS = ["aws.yaml", "gcp.yaml", "local.yaml"]
KUBERAY = ["kuberay/raycluster.yaml", "kuberay/rayservice.yaml"]
SERVE_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
ADMIN_TOKEN_ENV = "STREAMFIT_ADMIN_TOKEN"
OBJECT_STORE_SCHEMES = {"s3", "gs", "gcs", "abfs", "abfss", "hdfs"}
# Where the launcher configs sync cluster/ and where the KubeRay pods mount the ConfigMap.
LAUNCHER_CONFIG_PATH = "/home/ray/streamfit/streamfit-cluster.yaml"
KUBERAY_CONFIG_PATH = "/etc/streamfit/streamfit.yaml"
# RayService.spec fields (KubeRay ray-operator/apis/ray/v1/rayservice_types.go) and the upgrade types
# its ValidateRayServiceSpec accepts. Kubernetes prunes unknown fields of a CRD without an error.
RAYSERVICE_SPEC_FIELDS = {
    "serveConfigV2", "rayClusterConfig", "upgradeStrategy", "rayClusterDeletionDelaySeconds",
    "serveService", "excludeHeadPodFromServeSvc", "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
}
UPGRADE_TYPES = {"NewCluster", "NewClusterWithIncrementalUpgrade", "None"}
CLUSTER_UPGRADE_OPTIONS = {"maxSurgePercent", "stepSizePercent", "intervalSeconds", "gatewayClassName"}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Ray's token authentication (Ray >= 2.52; ray/_private/authentication/): RAY_AUTH_MODE=token in the
# environment of every Ray process turns it on (ray start reads it from the environment only), the token comes
# from RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token). The dashboard (Jobs and Serve REST APIs) then
# answers 401/403 without it (http_token_authentication.py), and so do the GCS and raylets' gRPC servers.
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# KubeRay's RayClusterSpec.authOptions (ray-operator/apis/ray/v1/raycluster_types.go, KubeRay >= 1.5.1; secretName
# >= 1.6) and the Secret the manifests name (data key auth_token, KubeRay's RAY_AUTH_TOKEN_SECRET_KEY).
KUBERAY_AUTH_FIELDS = {"mode", "secretName", "enableK8sTokenAuth"}
RAY_AUTH_SECRET = "streamfit-ray-auth"
PUBLIC_SERVICE_TYPES = {"LoadBalancer", "NodePort"}


def _load(rel: str) -> typing.Any:
    return yaml.safe_load((CLUSTER / rel).read_text())


def _bash_problems(where: str, script: str) -> list[str]:
    """Syntax errors of a shell command as bash parses it (``bash -n``: nothing is run)."""
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed to check the nodes' shell commands"
    res = subprocess.run([bash, "-n", "-c", script], capture_output=True, text=True)
    return [] if res.returncode == 0 else [f"{where}: not valid shell: {res.stderr.strip()}"]


# ----------------------------------------------------------------------------------------------
# cluster launcher
# ----------------------------------------------------------------------------------------------

def prepare_launcher(raw: dict) -> dict:
    """Ray's own preparation and validation, as ``ray up`` does it (raises on an invalid config).

    The ``local`` provider needs real head/worker IPs; the shipped file has placeholders, filled
    here with example addresses the way a user fills them in.
    """
    raw = copy.deepcopy(raw)
    if raw.get("provider", {}).get("type") == "local":
        n = len(raw["provider"].get("worker_ips", []))
        raw["provider"]["head_ip"] = "10.0.0.10"
        raw["provider"]["worker_ips"] = [f"10.0.0.{11 + i}" for i in range(n)]
    prepared = prepare_config(raw)
    validate_config(prepared)
    return prepared


def _mounted(prepared: dict, remote: str) -> Path | None:
    """The local path that file_mounts syncs to ``remote`` (paths relative to the repo root)."""
    for dst, src in prepared.get("file_mounts", {}).items():
        if remote == dst or remote.startswith(dst.rstrip("/") + "/"):
            return (REPO / src).resolve() / remote[len(dst.rstrip("/")):].lstrip("/")
    return None


def launcher_problems(raw: dict, prepared: dict) -> list[str]:
    """What a user would notice in a launcher config Ray accepts."""
    problems: list[str] = []
    # Autoscaling bounds.
    head_type = prepared["head_node_type"]
    workers = {k: v for k, v in prepared["available_node_types"].items() if k != head_type}
    if raw.get("provider", {}).get("type") == "local":
        workers = prepared["available_node_types"]  # one node type; head and workers by IP
        n_ips = len(raw["provider"]["worker_ips"])
        for key in ("min_workers", "max_workers"):
            if key in raw and raw[key] > n_ips:
                problems.append(f"{key}={raw[key]} exceeds the {n_ips} worker_ips (Ray caps it silently)")
    elif prepared["available_node_types"][head_type].get("max_workers", 0) != 0:
        problems.append("head node type must not be launched as a worker (max_workers: 0)")
    if not workers:
        problems.append("no worker node type")
    for name, nt in workers.items():
        if not 0 <= nt["min_workers"] <= nt["max_workers"]:
            problems.append(f"{name}: need 0 <= min_workers ({nt['min_workers']}) <= max_workers ({nt['max_workers']})")
        if nt["max_workers"] < 1:
            problems.append(f"{name}: max_workers {nt['max_workers']} < 1, the cluster can never grow")
        if nt["max_workers"] > prepared["max_workers"]:
            problems.append(f"{name}: max_workers {nt['max_workers']} above the global max_workers {prepared['max_workers']}")
    # The image: Ray's image of the Ray version the project runs (client and cluster agree).
    image = prepared.get("docker", {}).get("image", "")
    if image and not image.startswith(f"rayproject/ray:{ray.__version__}-"):
        problems.append(f"docker image {image!r} is not Ray {ray.__version__}'s")
    # Install streamfit from the wheel synced by file_mounts, on head and workers.
    for kind in ("head_setup_commands", "worker_setup_commands"):
        installs = [c for c in prepared[kind] if "pip install" in c and "streamfit-" in c and ".whl" in c]
        if not installs:
            problems.append(f"{kind}: no command installs the streamfit wheel")
        for cmd in installs:
            wheel_glob = re.search(r"(/\S+)/streamfit-\*\.whl", cmd)
            if not wheel_glob or _mounted(prepared, wheel_glob.group(1)) != CLUSTER / "dist":
                problems.append(f"{kind}: the wheel directory is not cluster/dist synced by file_mounts")
    # Start Ray with Serve's environment and the admin token, then the pipeline on the head.
    for kind, start in (("head_start_ray_commands", "ray start --head"),
                        ("worker_start_ray_commands", "ray start --address=$RAY_HEAD_IP:6379")):
        cmds = prepared[kind]
        idx = [i for i, c in enumerate(cmds) if start in c]
        if len(idx) != 1:
            problems.append(f"{kind}: expected one `{start}`")
            continue
        cmd = cmds[idx[0]]
        at = cmd.index(start)
        for var, val in SERVE_ENV.items():
            if f"{var}={val}" not in cmd[:at]:
                problems.append(f"{kind}: {var}={val} not exported before `ray start`")
        if "streamfit.env" not in cmd[:at]:
            problems.append(f"{kind}: streamfit.env ({ADMIN_TOKEN_ENV}) not sourced before `ray start`")
        if kind == "head_start_ray_commands":
            runs = [(i, c) for i, c in enumerate(cmds)
                    if re.search(r"streamfit run -c (\S+) --address auto", c)]
            if not runs:
                problems.append("head_start_ray_commands: no `streamfit run -c … --address auto`")
            for i, c in runs:
                if i <= idx[0]:
                    problems.append("head_start_ray_commands: `streamfit run` before `ray start --head`")
                if not re.search(r"&\s*(echo \$! > \S+)?\s*$", c):
                    problems.append("head_start_ray_commands: `streamfit run` is not put in the background")
                if "streamfit.env" not in c:
                    problems.append("head_start_ray_commands: the pipeline does not get streamfit.env")
                cfg = re.search(r"streamfit run -c (\S+)", c).group(1)
                if _mounted(prepared, cfg) != STREAMFIT_CLUSTER_CONFIG:
                    problems.append(f"head_start_ray_commands: {cfg} is not cluster/streamfit-cluster.yaml synced by file_mounts")
    for kind in ("head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        for i, cmd in enumerate(prepared[kind]):
            problems += _bash_problems(f"{kind}[{i}]", cmd)
    return problems + launcher_auth_problems(prepared)


def _last_assignment(script: str, var: str) -> str | None:
    """The value the last ``VAR=value`` in a shell snippet gives ``var`` (None without one)."""
    values = re.findall(rf"\b{var}=([^\s;]*)", script)
    return values[-1] if values else None


def launcher_auth_problems(prepared: dict) -> list[str]:
    """Ray's token auth on every node and for the pipeline's driver; the dashboard on the head's loopback only."""
    problems = []
    for kind, start in (("head_start_ray_commands", "ray start --head"), ("worker_start_ray_commands", "ray start --address"),
                        ("head_start_ray_commands", "streamfit run")):
        for cmd in (c for c in prepared[kind] if start in c):
            if _last_assignment(cmd[:cmd.index(start)], RAY_AUTH_MODE_ENV) != "token":
                problems.append(f"{kind}: {RAY_AUTH_MODE_ENV}=token not exported before `{start}` (Ray's auth is off)")
    if not any(f'[ -n "${RAY_AUTH_TOKEN_ENV}" ]' in c for c in prepared["setup_commands"]):
        problems.append(f"setup_commands: no check that streamfit.env sets {RAY_AUTH_TOKEN_ENV} (nodes would start without it)")
    for cmd in (c for c in prepared["head_start_ray_commands"] if "ray start --head" in c):
        hosts = re.findall(r"--dashboard-host[= ](\S+)", cmd)
        if not hosts or any(h not in LOOPBACK for h in hosts):
            problems.append(f"head_start_ray_commands: the dashboard must listen on the head's loopback only "
                            f"(--dashboard-host=127.0.0.1, reached through `ray dashboard`), not {hosts or 'unset'}")
    return problems


@pytest.fixture(scope="module", params=LAUNCHERS)
def launcher(request):
    raw = _load(request.param)
    return request.param, raw, prepare_launcher(raw)


def test_launcher_passes_rays_validation(launcher):
    name, raw, prepared = launcher
    assert prepared["cluster_name"] == "streamfit"
    assert prepared["provider"]["type"] == name.removesuffix(".yaml")
    assert "cluster_synced_files" in prepared  # filled by prepare_config's provider defaults


def test_launcher_installs_and_starts_streamfit(launcher):
    _, raw, prepared = launcher
    assert launcher_problems(raw, prepared) == []


def test_launcher_mount_holds_what_the_nodes_read(launcher):
    _, _, prepared = launcher
    assert _mounted(prepared, LAUNCHER_CONFIG_PATH) == STREAMFIT_CLUSTER_CONFIG
    assert STREAMFIT_CLUSTER_CONFIG.is_file()
    assert (CLUSTER / "streamfit.env.example").is_file()


def _drop_streamfit_install(c):
    c["setup_commands"] = [x for x in c["setup_commands"] if "pip install" not in x]


def _no_pipeline(c):
    c["head_start_ray_commands"] = [x for x in c["head_start_ray_commands"] if "streamfit run" not in x]


def _worker_without_serve_env(c):
    c["worker_start_ray_commands"] = [x.replace("RAY_SERVE_ENABLE_HA_PROXY=1", "") for x in c["worker_start_ray_commands"]]


def _pipeline_in_foreground(c):
    c["head_start_ray_commands"] = [re.sub(r"\s*&\s*echo \$! > \S+\s*$", "", x) for x in c["head_start_ray_commands"]]


def _unbalanced_quote(c):
    c["head_start_ray_commands"][-1] = c["head_start_ray_commands"][-1].replace("done'", "done")


def _min_above_max(c):
    key = next(k for k in c.get("available_node_types", {}) if "worker" in k)
    c["available_node_types"][key]["min_workers"] = 3  # within the global max_workers: Ray accepts it
    c["available_node_types"][key]["max_workers"] = 2


def _start(c, kind):
    return next(i for i, x in enumerate(c[kind]) if "ray start" in x)


def _head_auth_off(c):
    i = _start(c, "head_start_ray_commands")
    c["head_start_ray_commands"][i] = c["head_start_ray_commands"][i].replace(" RAY_AUTH_MODE=token", "")


def _worker_auth_disabled(c):
    i = _start(c, "worker_start_ray_commands")
    c["worker_start_ray_commands"][i] = c["worker_start_ray_commands"][i].replace("ray start", "RAY_AUTH_MODE=disabled ray start")


def _pipeline_auth_off(c):
    c["head_start_ray_commands"] = [x.replace(" RAY_AUTH_MODE=token", "") if "streamfit run" in x else x
                                    for x in c["head_start_ray_commands"]]


def _dashboard_public(c):
    i = _start(c, "head_start_ray_commands")
    c["head_start_ray_commands"][i] = re.sub(r"--dashboard-host=\S+", "--dashboard-host=0.0.0.0", c["head_start_ray_commands"][i])


def _dashboard_host_unset(c):
    i = _start(c, "head_start_ray_commands")
    c["head_start_ray_commands"][i] = re.sub(r"\s*--dashboard-host=\S+", "", c["head_start_ray_commands"][i])


def _no_ray_token_check(c):
    c["setup_commands"] = [x.replace('[ -n "$RAY_AUTH_TOKEN" ]', "true") for x in c["setup_commands"]]


@pytest.mark.parametrize("mutate, expected", [
    (_head_auth_off, "RAY_AUTH_MODE=token not exported before `ray start --head`"),
    (_worker_auth_disabled, "RAY_AUTH_MODE=token not exported before `ray start --address`"),
    (_pipeline_auth_off, "RAY_AUTH_MODE=token not exported before `streamfit run`"),
    (_dashboard_public, "the dashboard must listen on the head's loopback only"),
    (_dashboard_host_unset, "not unset"),
    (_no_ray_token_check, "sets RAY_AUTH_TOKEN"),
    (_drop_streamfit_install, "installs the streamfit wheel"),
    (_no_pipeline, "no `streamfit run"),
    (_worker_without_serve_env, "RAY_SERVE_ENABLE_HA_PROXY=1 not exported"),
    (_pipeline_in_foreground, "not put in the background"),
    (_unbalanced_quote, "not valid shell"),
    (_min_above_max, "min_workers (3) <= max_workers (2)"),
])
def test_launcher_check_catches(mutate, expected):
    raw = _load("aws.yaml")
    mutate(raw)
    problems = launcher_problems(raw, prepare_launcher(raw))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("mutate", [
    lambda c: c.__setitem__("setup_command", []),  # misspelled top-level key
    lambda c: c["available_node_types"]["ray.worker.default"].__setitem__("max_worker", 4),
    lambda c: c["available_node_types"]["ray.worker.default"].__setitem__("min_workers", "1"),
    lambda c: c["docker"].__setitem__("imag", "rayproject/ray"),
])
def test_rays_validation_rejects_bad_launcher_yaml(mutate):
    raw = _load("aws.yaml")
    mutate(raw)
    with pytest.raises(jsonschema.ValidationError):
        prepare_launcher(raw)


def test_local_provider_rejects_node_types():
    """The `local` provider has one internal node type; it refuses available_node_types."""
    raw = _load("local.yaml")
    raw["available_node_types"] = copy.deepcopy(_load("aws.yaml")["available_node_types"])
    with pytest.raises(Exception, match="not supported for on-premise"):
        prepare_launcher(raw)


def test_local_bounds_fit_the_worker_ips():
    raw = _load("local.yaml")
    raw["max_workers"] = len(raw["provider"]["worker_ips"]) + 1
    assert any("exceeds the" in p for p in launcher_problems(raw, prepare_launcher(raw)))


# ----------------------------------------------------------------------------------------------
# Serve config (serve deploy, serveConfigV2)
# ----------------------------------------------------------------------------------------------

def _models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def unknown_fields(data: typing.Any, model: type[BaseModel], path: str) -> list[str]:
    """Keys of ``data`` that ``model`` (and its nested models) does not define."""
    if not isinstance(data, dict):
        return []
    fields = {}
    for name, info in model.model_fields.items():
        fields[name] = info
        if info.alias:
            fields[info.alias] = info
    problems = []
    for key, value in data.items():
        where = f"{path}.{key}"
        if key not in fields:
            problems.append(f"{where}: unknown field of {model.__name__} (Serve would drop it silently)")
            continue
        models = _models_in(fields[key].annotation)
        if len(models) == 1:
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                problems += unknown_fields(item, models[0], f"{where}[{i}]" if isinstance(value, list) else where)
    return problems


def build_streamfit_app(app_cfg: dict, config_path: Path):
    """Serve's own import + build of an application, as its controller does for `serve deploy`."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    args = {**app_cfg.get("args", {}), "config": str(config_path)}
    app = call_user_app_builder_with_args_if_necessary(import_attr(app_cfg["import_path"]), args)
    built = build_app(app, name=app_cfg["name"])
    built.validate_single_fastapi_ingress()
    return app, built


def serve_config_problems(cfg: dict, config_path: Path = STREAMFIT_CLUSTER_CONFIG) -> list[str]:
    """A Serve deploy config, checked with Serve's schema, field names, and the built application."""
    from ray.serve import Application

    from streamfit.scripts.pipeline import NAMESPACE
    from streamfit.names import APP_NAME

    ServeDeploySchema.model_validate(cfg)  # raises on wrong types / missing required fields
    problems = unknown_fields(cfg, ServeDeploySchema, "serve")
    sf = load_config(config_path)
    http = cfg.get("http_options", {})
    if (http.get("host"), http.get("port")) != (sf.serving.host, sf.serving.port):
        problems.append(f"http_options {http} differ from the streamfit config's serving host/port "
                        f"({sf.serving.host}:{sf.serving.port}) that `streamfit run` starts Serve with")
    apps = cfg.get("applications", [])
    if [a.get("name") for a in apps] != [APP_NAME]:
        problems.append(f"applications must be exactly [{APP_NAME!r}] (the app `streamfit run` deploys)")
    for app_cfg in apps:
        if app_cfg.get("route_prefix", "/") != "/":
            problems.append("route_prefix must be / (the HTTP API and the CLI expect it)")
        if app_cfg.get("args", {}).get("namespace") != NAMESPACE:
            problems.append(f"args.namespace must be {NAMESPACE!r}, where `streamfit run` starts the actors")
        app, built = build_streamfit_app(app_cfg, config_path)
        if not isinstance(app, Application):
            problems.append("the import_path does not build a Serve Application")
        built_deps = {d.name: d for d in built.deployments}
        for dep in app_cfg.get("deployments", []):
            name = dep.get("name")
            if name not in built_deps:
                problems.append(f"deployment {name!r} is not a deployment of the app ({sorted(built_deps)})")
                continue
            code = built_deps[name]
            for key in ("num_replicas", "max_ongoing_requests", "ray_actor_options"):
                if key in dep and dep[key] != getattr(code, key):
                    problems.append(f"{name}.{key}: {dep[key]!r} in the file, {getattr(code, key)!r} from the streamfit config")
            for key, value in dep.get("logging_config", {}).items():
                if code.logging_config.get(key) != value:
                    problems.append(f"{name}.logging_config.{key}: {value!r} in the file, {code.logging_config.get(key)!r} from the streamfit config")
    return problems


def test_serve_config_is_valid_and_matches_the_app():
    cfg = _load("serve-config.yaml")
    assert serve_config_problems(cfg) == []
    app = cfg["applications"][0]
    assert app["import_path"] == "streamfit.serve.app:app_builder"
    assert app["args"]["config"] == LAUNCHER_CONFIG_PATH  # where the launcher configs sync it
    assert [d["name"] for d in app["deployments"]] == ["Router"]


def test_app_builder_returns_a_serve_application_without_ray():
    from ray.serve import Application

    from streamfit.serve import app as app_module

    builder = getattr(app_module, "app_builder")
    was_initialized = ray.is_initialized()
    assert isinstance(builder({"config": str(STREAMFIT_CLUSTER_CONFIG), "namespace": "streamfit"}), Application)
    assert ray.is_initialized() == was_initialized  # building the app neither needs nor starts Ray


def _commented_slot_deployments() -> list[dict]:
    text = (CLUSTER / "serve-config.yaml").read_text()
    block = text[text.index("(listing them without it fails"):].split("\n", 1)[1]
    return yaml.safe_load("\n".join(line.replace("#", " ", 1) for line in block.splitlines()))


def test_documented_isolated_slot_deployments_build(tmp_path):
    """The commented SlotBlue/SlotGreen entries are right for `serving.isolated_slots: true`."""
    sf = yaml.safe_load(STREAMFIT_CLUSTER_CONFIG.read_text())
    sf["serving"]["isolated_slots"] = True
    path = tmp_path / "streamfit.yaml"
    path.write_text(yaml.safe_dump(sf))
    cfg = _load("serve-config.yaml")
    cfg["applications"][0]["deployments"] += _commented_slot_deployments()
    assert [d["name"] for d in cfg["applications"][0]["deployments"]] == ["Router", "SlotBlue", "SlotGreen"]
    assert serve_config_problems(cfg, path) == []
    # ... and wrong without it: the app then has no such deployments.
    assert any("SlotBlue" in p and "not a deployment" in p for p in serve_config_problems(cfg))


def _dep(cfg):
    return cfg["applications"][0]["deployments"][0]


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: _dep(c).__setitem__("max_ongoing_request", 64), "deployments[0].max_ongoing_request: unknown field of DeploymentSchema"),
    (lambda c: _dep(c).__setitem__("num_replica", 2), "deployments[0].num_replica: unknown field of DeploymentSchema"),
    (lambda c: _dep(c)["ray_actor_options"].__setitem__("num_cpu", 1), "ray_actor_options.num_cpu: unknown field of RayActorOptionsSchema"),
    (lambda c: c["applications"][0].__setitem__("route_prefx", "/"), "applications[0].route_prefx: unknown field of ServeApplicationSchema"),
    (lambda c: c.__setitem__("http_option", {}), "serve.http_option: unknown field of ServeDeploySchema"),
])
def test_misspelled_serve_field_is_caught(mutate, expected):
    cfg = _load("serve-config.yaml")
    mutate(cfg)
    ServeDeploySchema.model_validate(cfg)  # Serve itself accepts it and drops the field ...
    problems = serve_config_problems(cfg)  # ... the field-name check does not
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: _dep(c).__setitem__("num_replicas", 5), "Router.num_replicas: 5 in the file, 2 from the streamfit config"),
    (lambda c: _dep(c).__setitem__("name", "Ruoter"), "'Ruoter' is not a deployment of the app"),
    (lambda c: _dep(c)["logging_config"].__setitem__("enable_access_log", True), "enable_access_log"),
    (lambda c: c["applications"][0]["args"].__setitem__("namespace", "default"), "args.namespace"),
    (lambda c: c["applications"][0].__setitem__("name", "app"), "applications must be exactly"),
    (lambda c: c["http_options"].__setitem__("port", 9000), "http_options"),
])
def test_serve_config_disagreeing_with_the_app_is_caught(mutate, expected):
    cfg = _load("serve-config.yaml")
    mutate(cfg)
    problems = serve_config_problems(cfg)
    assert any(expected in p for p in problems), problems


def test_serve_schema_rejects_wrong_types():
    cfg = _load("serve-config.yaml")
    _dep(cfg)["num_replicas"] = "two"
    with pytest.raises(pydantic.ValidationError, match="num_replicas"):
        serve_config_problems(cfg)


def test_unresolvable_import_path_fails():
    cfg = _load("serve-config.yaml")
    cfg["applications"][0]["import_path"] = "streamfit.serve.app:app_bilder"
    with pytest.raises(AttributeError):
        serve_config_problems(cfg)


# ----------------------------------------------------------------------------------------------
# KubeRay
# ----------------------------------------------------------------------------------------------

def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _pod_problems(where: str, pod: dict, overwrite_cmd: bool) -> list[str]:
    problems = []
    spec = pod.get("template", {}).get("spec", {})
    containers = spec.get("containers") or []
    if not containers:
        return [f"{where}: template.spec.containers is empty"]
    for c in containers:
        if not c.get("image"):
            problems.append(f"{where}: container {c.get('name')!r} has no image")
    ray_c = containers[0]  # KubeRay's Ray container is the first one
    env = _env(ray_c)
    for var, val in SERVE_ENV.items():
        if env.get(var, {}).get("value") != val:
            problems.append(f"{where}: env {var} must be {val!r} (read when Ray starts)")
    token = env.get(ADMIN_TOKEN_ENV)
    ref = (token or {}).get("valueFrom", {}).get("secretKeyRef", {})
    if not token or "value" in token or not ref.get("name") or not ref.get("key"):
        problems.append(f"{where}: {ADMIN_TOKEN_ENV} must come from a Secret (valueFrom.secretKeyRef name/key)")
    script = " ".join(ray_c.get("command", []) + ray_c.get("args", []))
    if overwrite_cmd:
        if "$KUBERAY_GEN_RAY_START_CMD" not in script:
            problems.append(f"{where}: with ray.io/overwrite-container-cmd the command must run $KUBERAY_GEN_RAY_START_CMD")
        if ray_c.get("args"):
            problems += _bash_problems(f"{where} args", "\n".join(ray_c["args"]))
    mounts = {m["mountPath"]: m["name"] for m in ray_c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config_dir = str(Path(KUBERAY_CONFIG_PATH).parent)
    if "configMap" not in volumes.get(mounts.get(config_dir, ""), {}):
        problems.append(f"{where}: {config_dir} is not a ConfigMap mount (the Serve app builder reads {KUBERAY_CONFIG_PATH})")
    return problems


def raycluster_spec_problems(spec: dict, annotations: dict) -> list[str]:
    problems = []
    overwrite = annotations.get("ray.io/overwrite-container-cmd") == "true"
    if spec.get("rayVersion") != ray.__version__:
        problems.append(f"rayVersion {spec.get('rayVersion')!r} is not {ray.__version__!r}")
    head = spec.get("headGroupSpec")
    if not head:
        return problems + ["headGroupSpec missing"]
    problems += _pod_problems("headGroupSpec", head, overwrite)
    head_script = " ".join(head["template"]["spec"]["containers"][0].get("args", []))
    if f"streamfit run -c {KUBERAY_CONFIG_PATH} --address auto" not in head_script:
        problems.append("headGroupSpec: the head does not start the pipeline (`streamfit run … --address auto`)")
    groups = spec.get("workerGroupSpecs") or []
    if not groups:
        problems.append("workerGroupSpecs missing")
    for g in groups:
        where = f"workerGroupSpecs[{g.get('groupName')}]"
        if not g.get("groupName"):
            problems.append(f"{where}: groupName missing")
        counts = [g.get(k) for k in ("minReplicas", "replicas", "maxReplicas")]
        if not all(isinstance(n, int) for n in counts):
            problems.append(f"{where}: replicas, minReplicas and maxReplicas must be set")
        elif not 0 <= counts[0] <= counts[1] <= counts[2] or counts[2] < 1:
            problems.append(f"{where}: need 0 <= minReplicas <= replicas <= maxReplicas, maxReplicas >= 1 (got {counts})")
        problems += _pod_problems(where, g, overwrite)
    images = {c["image"] for grp in [head, *groups] for c in grp["template"]["spec"]["containers"] if c.get("image")}
    if len(images) > 1:
        problems.append(f"head and workers run different images: {sorted(images)}")
    return problems


def upgrade_strategy_problems(spec: dict) -> list[str]:
    """KubeRay's ValidateRayServiceSpec / ValidateClusterUpgradeOptions rules, plus field names."""
    strategy = spec.get("upgradeStrategy") or {}
    problems = [f"upgradeStrategy.{k}: unknown field (KubeRay has type, clusterUpgradeOptions)"
                for k in strategy if k not in {"type", "clusterUpgradeOptions"}]
    kind = strategy.get("type", "NewCluster")
    if kind not in UPGRADE_TYPES:
        return problems + [f"upgradeStrategy.type {kind!r} is not one of {sorted(UPGRADE_TYPES)}"]
    opts = strategy.get("clusterUpgradeOptions")
    if kind != "NewClusterWithIncrementalUpgrade":
        if opts is not None:
            problems.append("clusterUpgradeOptions only apply to NewClusterWithIncrementalUpgrade")
        return problems
    if not spec.get("rayClusterConfig", {}).get("enableInTreeAutoscaling"):
        problems.append("NewClusterWithIncrementalUpgrade needs rayClusterConfig.enableInTreeAutoscaling: true")
    if not isinstance(opts, dict):
        return problems + ["clusterUpgradeOptions are required for NewClusterWithIncrementalUpgrade"]
    problems += [f"clusterUpgradeOptions.{k}: unknown field" for k in opts if k not in CLUSTER_UPGRADE_OPTIONS]
    surge, step, interval = opts.get("maxSurgePercent", 100), opts.get("stepSizePercent"), opts.get("intervalSeconds")
    if not isinstance(surge, int) or not 0 <= surge <= 100:
        problems.append("maxSurgePercent must be between 0 and 100")
    if not isinstance(step, int) or not 0 <= step <= 100:
        problems.append("stepSizePercent must be between 0 and 100")
    elif isinstance(surge, int) and step > surge:
        problems.append("stepSizePercent must be less than or equal to maxSurgePercent")
    if not isinstance(interval, int) or interval <= 0:
        problems.append("intervalSeconds must be greater than 0")
    if not opts.get("gatewayClassName"):
        problems.append("gatewayClassName is required for NewClusterWithIncrementalUpgrade")
    return problems


def kuberay_auth_problems(spec: dict, kind: str) -> list[str]:
    """Ray's token auth through KubeRay's authOptions, and no dashboard reachable from outside the cluster.

    KubeRay sets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from the Secret) in every Ray container, but never
    replaces a variable a container already sets. Without a ``dashboard-host`` KubeRay binds 0.0.0.0. A
    RayCluster's dashboard listens on the pod's loopback only (kubectl port-forward reaches it); a RayService's
    must listen on the pod address, where KubeRay's operator deploys serveConfigV2 through Serve's REST API
    (with the token), so its head Service must stay inside the cluster (ClusterIP, no ingress).
    """
    problems = []
    auth = spec.get("authOptions") or {}
    problems += [f"authOptions.{k}: unknown field (KubeRay has {sorted(KUBERAY_AUTH_FIELDS)})"
                 for k in auth if k not in KUBERAY_AUTH_FIELDS]
    if auth.get("mode") != "token":
        problems.append(f"authOptions.mode is {auth.get('mode')!r}, not 'token': Ray's token authentication is off")
    if auth.get("secretName") != RAY_AUTH_SECRET:
        problems.append(f"authOptions.secretName must be {RAY_AUTH_SECRET!r} (the Secret the operator creates)")
    head = spec.get("headGroupSpec") or {}
    for group in [head, *(spec.get("workerGroupSpecs") or [])]:
        for c in group.get("template", {}).get("spec", {}).get("containers", []):
            env = _env(c)
            if env.get(RAY_AUTH_MODE_ENV, {}).get("value", "token") != "token":
                problems.append(f"container {c.get('name')!r} sets {RAY_AUTH_MODE_ENV}={env[RAY_AUTH_MODE_ENV]['value']!r} "
                                "(KubeRay keeps it: auth off)")
            if "value" in env.get(RAY_AUTH_TOKEN_ENV, {}):
                problems.append(f"container {c.get('name')!r}: {RAY_AUTH_TOKEN_ENV} as a literal value (use authOptions.secretName)")
    host = (head.get("rayStartParams") or {}).get("dashboard-host", "0.0.0.0")  # KubeRay's default
    if kind == "RayCluster" and host not in LOOPBACK:
        problems.append(f"headGroupSpec.rayStartParams.dashboard-host {host!r}: the dashboard must listen on the "
                        "pod's loopback only (127.0.0.1; kubectl port-forward reaches it)")
    service_types = {head.get("serviceType"), (head.get("headService") or {}).get("spec", {}).get("type")}
    if service_types & PUBLIC_SERVICE_TYPES or head.get("enableIngress"):
        problems.append("the head Service (dashboard, GCS, client ports) must stay inside the cluster: "
                        "no LoadBalancer/NodePort serviceType, no enableIngress")
    return problems


def kuberay_problems(doc: dict) -> list[str]:
    problems = []
    if doc.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion {doc.get('apiVersion')!r} is not 'ray.io/v1'")
    name = doc.get("metadata", {}).get("name", "")
    if not DNS1035.match(name) or len(name) > 63:
        problems.append(f"metadata.name {name!r} is not a DNS-1035 label")
    annotations = doc.get("metadata", {}).get("annotations", {})
    spec = doc.get("spec", {})
    if doc.get("kind") == "RayCluster":
        problems += raycluster_spec_problems(spec, annotations)
        problems += kuberay_auth_problems(spec, "RayCluster")
    elif doc.get("kind") == "RayService":
        problems += [f"spec.{k}: unknown RayService field" + (" (KubeRay's field is rayClusterConfig)" if k == "rayClusterSpec" else "")
                     for k in spec if k not in RAYSERVICE_SPEC_FIELDS]
        if "rayClusterConfig" not in spec:
            problems.append("spec.rayClusterConfig missing")
        else:
            problems += raycluster_spec_problems(spec["rayClusterConfig"], annotations)
            problems += kuberay_auth_problems(spec["rayClusterConfig"], "RayService")
        if not isinstance(spec.get("serveConfigV2"), str):
            problems.append("spec.serveConfigV2 must be a YAML string")
        problems += upgrade_strategy_problems(spec)
    else:
        problems.append(f"kind {doc.get('kind')!r} is not RayCluster or RayService")
    return problems


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict]]:
    return {rel: [d for d in yaml.safe_load_all((CLUSTER / rel).read_text()) if d] for rel in KUBERAY}


def test_kuberay_manifests_are_valid(manifests):
    kinds = {}
    for rel, docs in manifests.items():
        assert docs, rel
        for doc in docs:
            assert kuberay_problems(doc) == [], rel
            kinds[doc["kind"]] = doc
    assert set(kinds) == {"RayCluster", "RayService"}
    # The RayService runs the same cluster as the RayCluster manifest.
    # The same cluster, except that under a RayService the pipeline leaves the Serve app to serveConfigV2.
    # And the RayService's dashboard listens on the pod address, where KubeRay's operator reaches it (token
    # required); the RayCluster's only on the pod's loopback.
    service_spec = kinds["RayService"]["spec"]["rayClusterConfig"]
    assert "--no-serve" in json.dumps(service_spec) and "--no-serve" not in json.dumps(kinds["RayCluster"]["spec"])
    same = json.loads(json.dumps(service_spec).replace(" --no-serve", ""))
    assert same["headGroupSpec"]["rayStartParams"].pop("dashboard-host") == "0.0.0.0"
    assert kinds["RayCluster"]["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    same["headGroupSpec"]["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    assert same == kinds["RayCluster"]["spec"]


def _rayservice(manifests) -> dict:
    return next(d for d in manifests["kuberay/rayservice.yaml"] if d["kind"] == "RayService")


def test_rayservice_serve_config_is_valid(manifests):
    serve_cfg = yaml.safe_load(_rayservice(manifests)["spec"]["serveConfigV2"])
    assert serve_cfg["applications"][0]["args"]["config"] == KUBERAY_CONFIG_PATH
    assert serve_config_problems(serve_cfg) == []
    # The same application as serve-config.yaml, only the config path differs.
    file_cfg = _load("serve-config.yaml")
    file_cfg["applications"][0]["args"]["config"] = KUBERAY_CONFIG_PATH
    assert serve_cfg == file_cfg


def test_rayservice_upgrade_strategy(manifests):
    strategy = _rayservice(manifests)["spec"]["upgradeStrategy"]
    assert strategy["type"] in UPGRADE_TYPES
    assert strategy["type"] == "NewCluster"  # no Gateway API needed


def _documented_incremental_strategy() -> dict:
    text = (CLUSTER / "kuberay/rayservice.yaml").read_text()
    block = text[text.index("Replace the block below with:"):].split("\n")[1:]
    lines = []
    for line in block:
        if not line.startswith("#       "):
            break
        lines.append(line[1:])
    return yaml.safe_load(textwrap.dedent("\n".join(lines)))["upgradeStrategy"]


def test_documented_incremental_upgrade_is_valid(manifests):
    doc = copy.deepcopy(_rayservice(manifests))
    doc["spec"]["upgradeStrategy"] = _documented_incremental_strategy()
    assert doc["spec"]["upgradeStrategy"]["type"] == "NewClusterWithIncrementalUpgrade"
    assert kuberay_problems(doc) == []


def _spec(d):
    return d["spec"]


def _cluster(d):
    return d["spec"]["rayClusterConfig"]


def _worker(d):
    return _cluster(d)["workerGroupSpecs"][0]


def _head_container(d):
    return _cluster(d)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _incremental(**opts):
    def mutate(d):
        d["spec"]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": opts}
    return mutate


def _token_literal(d):
    env = _head_container(d)["env"]
    env[[e["name"] for e in env].index(ADMIN_TOKEN_ENV)] = {"name": ADMIN_TOKEN_ENV, "value": "hunter2"}


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: _spec(d).__setitem__("rayClusterSpec", _spec(d).pop("rayClusterConfig")), "KubeRay's field is rayClusterConfig"),
    (lambda d: d.__setitem__("apiVersion", "ray.io/v1alpha1"), "apiVersion"),
    (lambda d: _spec(d)["upgradeStrategy"].__setitem__("type", "NewClusterIncremental"), "is not one of"),
    (lambda d: _spec(d)["upgradeStrategy"].__setitem__("type", "NewClusterWithIncrementalUpgrade"), "clusterUpgradeOptions are required"),
    (_incremental(gatewayClassName="istio", maxSurgePercent=10, stepSizePercent=20, intervalSeconds=60), "less than or equal to maxSurgePercent"),
    (_incremental(gatewayClassName="istio", stepSizePercent=10), "intervalSeconds must be greater than 0"),
    (_incremental(stepSizePercent=10, intervalSeconds=60), "gatewayClassName is required"),
    (lambda d: _spec(d)["upgradeStrategy"].__setitem__("maxSurgePercent", 20), "upgradeStrategy.maxSurgePercent: unknown field"),
    (_token_literal, "must come from a Secret"),
    (lambda d: _cluster(d).pop("authOptions"), "not 'token': Ray's token authentication is off"),
    (lambda d: _cluster(d)["authOptions"].__setitem__("mode", "disabled"), "not 'token'"),
    (lambda d: _cluster(d)["authOptions"].__setitem__("secretname", "x"), "authOptions.secretname: unknown field"),
    (lambda d: _cluster(d)["authOptions"].pop("secretName"), "authOptions.secretName must be"),
    (lambda d: _worker(d)["template"]["spec"]["containers"][0]["env"].append({"name": "RAY_AUTH_MODE", "value": "disabled"}),
     "(KubeRay keeps it: auth off)"),
    (lambda d: _head_container(d)["env"].append({"name": "RAY_AUTH_TOKEN", "value": "hunter2"}), "RAY_AUTH_TOKEN as a literal"),
    (lambda d: _cluster(d)["headGroupSpec"].__setitem__("serviceType", "LoadBalancer"), "must stay inside the cluster"),
    (lambda d: _cluster(d)["headGroupSpec"].__setitem__("enableIngress", True), "must stay inside the cluster"),
    (lambda d: _worker(d).__setitem__("minReplicas", 9), "need 0 <= minReplicas <= replicas <= maxReplicas"),
    (lambda d: _worker(d).pop("maxReplicas"), "must be set"),
    (lambda d: _worker(d)["template"]["spec"]["containers"][0].pop("image"), "has no image"),
    (lambda d: _worker(d)["template"]["spec"]["containers"][0].__setitem__("args", ["ulimit -n 65536"]), "$KUBERAY_GEN_RAY_START_CMD"),
    (lambda d: _head_container(d)["env"].pop(0), "RAY_SERVE_THROUGHPUT_OPTIMIZED"),
    (lambda d: _cluster(d).__setitem__("rayVersion", "2.9.0"), "rayVersion"),
    (lambda d: _head_container(d).__setitem__("args", ["$KUBERAY_GEN_RAY_START_CMD"]), "does not start the pipeline"),
])
def test_kuberay_check_catches(manifests, mutate, expected):
    doc = copy.deepcopy(_rayservice(manifests))
    mutate(doc)
    problems = kuberay_problems(doc)
    assert any(expected in p for p in problems), problems


def test_ray_control_plane_needs_the_token_and_is_not_public(manifests):
    """Issue 13, item 8: every launcher config and manifest turns Ray's token auth on, no dashboard on 0.0.0.0 in
    reach of anyone but the cluster."""
    for name in LAUNCHERS:
        assert launcher_auth_problems(prepare_launcher(_load(name))) == [], name
    for rel, docs in manifests.items():
        for doc in docs:
            spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterConfig"]
            assert kuberay_auth_problems(spec, doc["kind"]) == [], rel


@pytest.mark.parametrize("params", [{"dashboard-host": "0.0.0.0"}, {}])  # {}: KubeRay's default is 0.0.0.0
def test_raycluster_dashboard_on_the_pod_network_is_caught(manifests, params):
    doc = copy.deepcopy(next(d for d in manifests["kuberay/raycluster.yaml"] if d["kind"] == "RayCluster"))
    doc["spec"]["headGroupSpec"]["rayStartParams"] = params
    assert any("dashboard-host '0.0.0.0'" in p for p in kuberay_problems(doc))


def test_images_are_rays_pinned_version():
    base = re.search(r"^FROM (\S+)", (CLUSTER / "kuberay/Dockerfile").read_text(), re.M).group(1)
    assert base.startswith(f"rayproject/ray:{ray.__version__}-")
    for name in LAUNCHERS:
        assert _load(name)["docker"]["image"] == base  # one image everywhere


# ----------------------------------------------------------------------------------------------
# The streamfit config for a cluster, and secrets
# ----------------------------------------------------------------------------------------------

def streamfit_config_problems(path: Path) -> list[str]:
    cfg = load_config(path)  # raises ConfigError naming the field
    problems = []
    for section in ("registry", "checkpoints"):
        uri = getattr(cfg, section).uri
        parsed = urlparse(uri)
        if parsed.scheme not in OBJECT_STORE_SCHEMES or not parsed.netloc:
            problems.append(f"{section}.uri {uri!r} is not on object storage (every node must reach it)")
    if not cfg.checkpoints.enabled:
        problems.append("checkpoints.enabled is false: a restarted shard would lose its state")
    if cfg.serving.host in ("127.0.0.1", "localhost"):
        problems.append(f"serving.host {cfg.serving.host!r} is not reachable from other machines")
    return problems


def test_streamfit_cluster_config_loads_and_uses_object_storage():
    cfg = load_config(STREAMFIT_CLUSTER_CONFIG)
    assert cfg.registry.uri.startswith("s3://") and cfg.checkpoints.uri.startswith("s3://")
    assert cfg.shards.num_shards >= 2
    assert streamfit_config_problems(STREAMFIT_CLUSTER_CONFIG) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["registry"].__setitem__("uri", ".streamfit/registry"), "registry.uri"),
    (lambda c: c["checkpoints"].__setitem__("uri", "/mnt/checkpoints"), "checkpoints.uri"),
    (lambda c: c["checkpoints"].__setitem__("uri", "s3:///no-bucket"), "checkpoints.uri"),
    (lambda c: c["serving"].__setitem__("host", "127.0.0.1"), "serving.host"),
])
def test_streamfit_cluster_config_check_catches(tmp_path, mutate, expected):
    data = yaml.safe_load(STREAMFIT_CLUSTER_CONFIG.read_text())
    mutate(data)
    path = tmp_path / "streamfit.yaml"
    path.write_text(yaml.safe_dump(data))
    assert any(expected in p for p in streamfit_config_problems(path))


def test_streamfit_cluster_config_typo_fails_to_load(tmp_path):
    data = yaml.safe_load(STREAMFIT_CLUSTER_CONFIG.read_text())
    data["shards"]["num_shard"] = 8
    path = tmp_path / "streamfit.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="shards.num_shard"):
        load_config(path)


def test_secrets_stay_out_of_git_and_images():
    assert "streamfit.env" in (CLUSTER / ".gitignore").read_text().split()
    assert "dist/" in (CLUSTER / ".gitignore").read_text().split()
    assert "streamfit.env" in (CLUSTER / ".dockerignore").read_text().split()
    example = dict(line.split("=", 1) for line in (CLUSTER / "streamfit.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example == {ADMIN_TOKEN_ENV: "", RAY_AUTH_TOKEN_ENV: ""}  # no default token: setup refuses an empty one
