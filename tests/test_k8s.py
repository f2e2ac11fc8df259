"""The Kubernetes manifests (k8s/) and the image (Dockerfile), checked offline: strict schemas, KubeRay's
operator-only rules, and consistency with the configs, setup.cfg and each other (security properties:
tests/test_k8s_security.py; the image: tests/test_k8s_image.py; NetworkPolicy semantics: tests/test_k8s_netpol.py).

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_k8s.py tests/test_k8s_security.py
"""
from __future__ import annotations

import copy
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from c3dhash.cluster.config import load_config
from k8s_helpers import (K8S, REPO, RenderError, command_argvs, containers, cpus, doc_key, gpus, kubectl,
                         kustomizations, mounts_by_path, parse_commands, pod_templates, ray_cluster_specs, render,
                         render_kubectl, render_subset, schema_checksum_problems, schema_dir, schema_errors,
                         setup_cfg_pins)

pytestmark = pytest.mark.k8s

DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
RAY_PIN = setup_cfg_pins()["ray"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {str(d.relative_to(REPO)): render(d) for d in kustomizations()}


@pytest.fixture(scope="module")
def base(rendered) -> list[dict]:
    return rendered["k8s"]


@pytest.fixture(scope="module")
def every(rendered) -> list[dict]:
    return [doc for docs in rendered.values() for doc in docs]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


# --------------------------------------------------------------------------- rendering and schemas
def test_kustomizations_render_the_expected_resources(rendered):
    kinds = {k: sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs) for k, docs in rendered.items()}
    assert set(kinds) == {"k8s", "k8s/eval", "k8s/interactive", "k8s/data", "k8s/serve"}
    assert kinds["k8s/eval"] == ["RayJob/c3dhash-eval"]
    assert kinds["k8s/interactive"] == ["RayCluster/c3dhash-interactive"]
    assert kinds["k8s/serve"] == ["NetworkPolicy/c3dhash-serve-http", "RayService/c3dhash-serve"]
    for expected in ("Namespace/c3dhash", "ServiceAccount/c3dhash", "ConfigMap/c3dhash-configs",
                     "PersistentVolumeClaim/c3dhash-datasets", "PersistentVolumeClaim/c3dhash-results",
                     "RayJob/c3dhash-train", "Deployment/c3dhash-tensorboard", "Service/c3dhash-tensorboard"):
        assert expected in kinds["k8s"]
    # the base never starts the evaluation (it needs a trained checkpoint) nor an idle GPU cluster
    assert "RayJob/c3dhash-eval" not in kinds["k8s"]
    assert not [k for k in kinds["k8s"] if k.startswith("RayCluster/")]


def test_vendored_schemas_are_intact():
    assert schema_checksum_problems(Path(__file__).parent / "k8s_schemas") == []
    assert schema_dir().is_dir()


def test_missing_schemas_fail_rather_than_skip(monkeypatch, tmp_path):
    monkeypatch.setenv("C3DHASH_K8S_SCHEMAS", str(tmp_path / "nowhere"))
    with pytest.raises(pytest.fail.Exception, match="k8s schemas not found"):
        schema_dir()


def test_every_document_validates_strictly(every):
    errors = [e for doc in every for e in schema_errors(doc)]
    assert errors == []


@pytest.mark.parametrize("kind,name", [("RayJob", "c3dhash-train"), ("Deployment", "c3dhash-tensorboard"),
                                       ("RayCluster", "c3dhash-interactive")])
def test_validator_rejects_a_misspelt_field_and_a_wrong_type(every, kind, name):
    doc = copy.deepcopy(one(every, kind, name))
    pod = (doc["spec"]["template"] if kind == "Deployment" else
           (doc["spec"].get("rayClusterSpec") or doc["spec"])["workerGroupSpecs"][0]["template"])
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "IfNotPresent"
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = ["4"]
    errors = schema_errors(doc)
    assert any("'imagePullPolicyy' was unexpected" in e for e in errors), errors
    assert any("resources.limits.cpu" in e for e in errors), errors
    doc = copy.deepcopy(one(every, kind, name))
    doc["spec"]["replicaz" if kind == "Deployment" else "suspendd"] = 1
    doc["metadata"]["labels"]["app.kubernetes.io/part-of"] = 3
    errors = schema_errors(doc)
    assert len(errors) == 2, errors
    assert "was unexpected" in " ".join(errors) and "not of type" in " ".join(errors)


@pytest.mark.skipif(not kubectl(), reason="kubectl not on PATH: the subset renderer is the only one here")
@pytest.mark.parametrize("kdir", kustomizations(), ids=lambda d: str(d.relative_to(REPO)))
def test_subset_renderer_equals_kubectl_kustomize(kdir):
    """The fallback renderer (used where kubectl is missing) gives exactly kubectl's documents."""
    ours, theirs = sorted(render_subset(kdir), key=doc_key), sorted(render_kubectl(kdir), key=doc_key)
    assert [doc_key(d) for d in ours] == [doc_key(d) for d in theirs]
    for a, b in zip(ours, theirs):
        assert a == b, f"{doc_key(a)}: the subset renderer differs from kubectl kustomize"


def test_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\npatches: [{path: p.yaml}]\n")
    with pytest.raises(RenderError, match="patches not implemented"):
        render_subset(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator: [{name: c, files: [../x.yaml], "
                                                 "options: {disableNameSuffixHash: true}}]\n")
    with pytest.raises(RenderError, match="load restrictor"):
        render_subset(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator: [{name: c, files: [x.yaml]}]\n")
    with pytest.raises(RenderError, match="hash suffix"):
        render_subset(tmp_path)


def test_renderer_rewrites_images_inside_custom_resources(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "namespace: ns\nresources: [r.yaml]\nimages: [{name: app, newName: reg/app, newTag: '2'}]\n")
    pods = {"containers": [{"image": "app:1"}, {"image": "other:1"}]}
    thing = {"apiVersion": "x/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"a": pods}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(thing))
    renderers = [render_subset] + ([render_kubectl] if kubectl() else [])
    for renderer in renderers:  # kubectl's image transformer reaches CR pod templates too
        (doc,) = renderer(tmp_path)
        assert [c["image"] for c in doc["spec"]["a"]["containers"]] == ["reg/app:2", "other:1"], renderer
        assert doc["metadata"]["namespace"] == "ns"


# --------------------------------------------------------------------------- KubeRay operator-only rules
def operator_problems(doc: dict) -> list[str]:
    """Checks KubeRay makes in its controller (validation.go) that no schema expresses."""
    name, kind, out = doc["metadata"]["name"], doc["kind"], []
    limit = {"RayJob": 47, "RayCluster": 53, "RayService": 47}[kind]
    if len(name) > limit or not DNS1035.match(name):
        out.append(f"{kind}/{name}: name must be a DNS-1035 label of at most {limit} characters")
    if kind == "RayJob":
        spec = doc["spec"]
        if spec.get("ttlSecondsAfterFinished", 0) < 0 or (
                spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes")):
            out.append(f"{name}: ttlSecondsAfterFinished needs shutdownAfterJobFinishes and must be >= 0")
    for where, spec in ray_cluster_specs([doc]):
        if spec.get("authOptions", {}).get("mode") == "token" and tuple(
                map(int, spec.get("rayVersion", "0").split("."))) < (2, 52, 0):
            out.append(f"{where}: token auth needs rayVersion >= 2.52.0")
        groups = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
        if len({g.get("groupName") for g in groups[1:]}) != len(groups) - 1:
            out.append(f"{where}: worker groupNames must be unique")
        for g in groups:
            params = g.get("rayStartParams", {})
            if g.get("resources") and set(params) & {"num-cpus", "num-gpus", "memory", "resources"}:
                out.append(f"{where}: resources set both in rayStartParams and the group's resources")
            if not g["template"]["spec"].get("containers"):
                out.append(f"{where}: every group needs a container")
        for g in groups[1:]:
            if not g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"]:
                out.append(f"{where}/{g['groupName']}: need minReplicas <= replicas <= maxReplicas")
    for where, _, template in pod_templates([doc]):
        for c in containers(template):
            res = c.get("resources", {})
            requests, limits = res.get("requests") or {}, res.get("limits") or {}
            if requests.get("nvidia.com/gpu") != limits.get("nvidia.com/gpu"):
                out.append(f"{where}/{c['name']}: nvidia.com/gpu requests must equal limits")
    return out


def test_ray_resources_follow_the_operator_rules(every):
    ray = [d for d in every if d["apiVersion"] == "ray.io/v1"]
    assert {d["kind"] for d in ray} == {"RayJob", "RayCluster", "RayService"}
    assert [p for d in ray for p in operator_problems(d)] == []


def test_operator_rule_checks_catch_violations(base):
    job = one(base, "RayJob", "c3dhash-train")
    bad = copy.deepcopy(job)
    bad["metadata"]["name"] = "c3dhash-train-" + "x" * 40
    group = bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["minReplicas"] = group["replicas"] + 1
    group["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "1"
    bad["spec"]["rayClusterSpec"]["rayVersion"] = "2.51.0"
    assert len(operator_problems(bad)) == 4


def test_heads_take_no_work_and_gpu_workers_tolerate_the_gpu_taint(every):
    specs = list(ray_cluster_specs(every))
    assert len(specs) == 4
    for where, spec in specs:
        assert spec["rayVersion"] == RAY_PIN, where
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", where
        assert not any(gpus(c) for c in containers(spec["headGroupSpec"]["template"])), where
        for g in spec["workerGroupSpecs"]:
            assert all(k in g for k in ("replicas", "minReplicas", "maxReplicas")), where
            assert any(gpus(c) for c in containers(g["template"])), where
            tol = g["template"]["spec"].get("tolerations", [])
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tol, where


def test_jobs_clean_up_after_themselves(every):
    for job in (d for d in every if d["kind"] == "RayJob"):
        assert job["spec"]["shutdownAfterJobFinishes"] is True
        assert 0 <= job["spec"]["ttlSecondsAfterFinished"] <= 3600
        # without a deadline a job whose actors are never placed holds its GPU pods forever (issue 29)
        assert 0 < job["spec"].get("activeDeadlineSeconds", 0) <= 7 * 24 * 3600, job["metadata"]["name"]


# --------------------------------------------------------------------------- consistency across files
def test_configmap_copies_are_byte_identical_to_configs(base):
    data = one(base, "ConfigMap", "c3dhash-configs")["data"]
    for key, text in data.items():
        assert text == (REPO / "configs" / key).read_text(), \
            f"k8s/configs/{key} drifted from configs/{key}: cp configs/{key} k8s/configs/"
    gpu_configs = {p.name for p in (REPO / "configs").glob("*.yaml") if load_config(p).cluster.use_gpu}
    missing = sorted(gpu_configs - set(data))
    assert not missing, f"GPU configs missing from k8s/configs/ and k8s/kustomization.yaml: {missing}"


def ray_mounts(docs: list[dict]) -> dict[str, str]:
    """mountPath of each volume source (claim or ConfigMap name) in the Ray pods, asserted equal in all."""
    found: dict[str, set[str]] = {}
    for _, role, template in pod_templates(docs):
        if role in ("head", "worker"):
            for path, (_, vol) in mounts_by_path(template, template["spec"]["containers"][0]).items():
                source = ((vol.get("persistentVolumeClaim") or {}).get("claimName")
                          or (vol.get("configMap") or {}).get("name"))
                if source:
                    found.setdefault(source, set()).add(path)
    assert all(len(paths) == 1 for paths in found.values()), found
    return {source: paths.pop() for source, paths in found.items()}


def job_commands(job: dict, mounts: dict[str, str], configmap: dict) -> list[tuple[str, dict, object]]:
    """(subcommand, options, effective JobConfig) for each `c3dhash` command of a RayJob entrypoint."""
    out = []
    for cmd, opts in parse_commands(job["spec"]["entrypoint"]):
        cfg = None
        if "--config" in opts:
            (path,) = map(PurePosixPath, opts["--config"])
            assert path.parent == PurePosixPath(mounts["c3dhash-configs"]), path
            assert path.name in configmap["data"], f"{path} is not in the ConfigMap"
            cfg = load_config(K8S / "configs" / path.name, opts.get("--set", []))
        out.append((cmd, opts, cfg))
    return out


def test_entrypoints_are_accepted_by_the_c3dhash_cli(every):
    from c3dhash.cluster.cli import build_parser

    parser = build_parser()
    jobs = [d for d in every if d["kind"] == "RayJob"]
    assert len(jobs) == 2
    for job in jobs:
        for argv in command_argvs(job["spec"]["entrypoint"]):
            try:
                args = parser.parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"RayJob/{job['metadata']['name']}: the c3dhash CLI rejects `{' '.join(argv)}`")
            assert args.command == argv[1] and callable(args.func)


def test_entrypoint_chains_cannot_leak_into_the_submitter_shell():
    with pytest.raises(AssertionError, match="submitter's shell"):
        command_argvs("c3dhash encode --split test --out a.npz && c3dhash eval --query a.npz")
    with pytest.raises(AssertionError, match="submitter's shell"):
        command_argvs("c3dhash train --config c.yaml; rm -rf /results")
    assert command_argvs("bash -c 'c3dhash a --x 1 && c3dhash b --y \"2 3\"'") == [
        ["c3dhash", "a", "--x", "1"], ["c3dhash", "b", "--y", "2 3"]]


def test_training_entrypoint_names_a_valid_config_sized_for_the_cluster(base):
    job, mounts = one(base, "RayJob", "c3dhash-train"), ray_mounts(base)
    ((cmd, opts, cfg),) = job_commands(job, mounts, one(base, "ConfigMap", "c3dhash-configs"))
    assert cmd == "train" and cfg.cluster.use_gpu
    assert cfg.cluster.storage_path == mounts["c3dhash-results"]
    for path in (cfg.data.root, cfg.model.weights):
        assert PurePosixPath(path).is_relative_to(mounts["c3dhash-datasets"]), path
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    per_pod = [(g["maxReplicas"], gpus(g["template"]["spec"]["containers"][0]),
                cpus(g["template"]["spec"]["containers"][0])) for g in workers]
    assert worker_range(cfg)[1] == sum(n * g for n, g, _ in per_pod), "one Ray Train worker per GPU"
    assert all(g * cfg.cluster.cpus_per_worker <= c for _, g, c in per_pod), "workers' CPUs must fit in a pod"


def worker_range(cfg) -> tuple[int, int]:
    """(min, max) Ray Train workers: cluster.num_workers is a count or an elastic [min, max] range."""
    n = cfg.cluster.num_workers
    return (n, n) if isinstance(n, int) else (int(n[0]), int(n[1]))


def test_worker_group_spans_the_elastic_range_and_can_grow_back(base):
    """KubeRay keeps between minReplicas and maxReplicas pods: the max must give the config's largest worker
    count, the min must still hold its smallest, and the autoscaler must be on so that pods lost to a node
    failure are requested again while Ray Train waits for workers (elastic training, README)."""
    job, mounts = one(base, "RayJob", "c3dhash-train"), ray_mounts(base)
    ((_, _, cfg),) = job_commands(job, mounts, one(base, "ConfigMap", "c3dhash-configs"))
    lo, hi = worker_range(cfg)
    spec = job["spec"]["rayClusterSpec"]
    (group,) = spec["workerGroupSpecs"]
    per_pod = gpus(group["template"]["spec"]["containers"][0])
    assert group["maxReplicas"] * per_pod == hi
    assert group["minReplicas"] == -(-lo // per_pod), "minReplicas pods must hold the smallest worker count"
    assert group["minReplicas"] <= group["replicas"] == group["maxReplicas"], "start at full size"
    assert spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    assert options["version"] == "v2" and options["upscalingMode"] in ("Default", "Aggressive")
    assert 0 < options["idleTimeoutSeconds"] <= 600


def test_every_decoding_container_lets_dali_load_nvdec(rendered):
    """libnvcuvid.so (NVDEC) is mounted by the NVIDIA runtime only when NVIDIA_DRIVER_CAPABILITIES has
    `video`; GPU workers decode training/eval clips, the data pod runs check-data."""
    decoding = [(f"{k}:{where}", c) for k, docs in rendered.items() for where, role, t in pod_templates(docs)
                for c in containers(t) if gpus(c) or where == "Deployment/c3dhash-data"]
    assert {w.split(":")[0] for w, _ in decoding} == {"k8s", "k8s/interactive", "k8s/data", "k8s/eval", "k8s/serve"}
    missing = []
    for where, c in decoding:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        caps = set((env.get("NVIDIA_DRIVER_CAPABILITIES") or "").split(","))
        if not {"compute", "video", "utility"} <= caps:
            missing.append(f"{where}/{c['name']}")
    assert not missing, f"add env NVIDIA_DRIVER_CAPABILITIES=compute,video,utility to {missing}"


def test_eval_job_evaluates_what_training_wrote(base, rendered):
    mounts, configmap = ray_mounts(base), one(base, "ConfigMap", "c3dhash-configs")
    train = job_commands(one(base, "RayJob", "c3dhash-train"), mounts, configmap)
    job = one(rendered["k8s/eval"], "RayJob", "c3dhash-eval")
    cmds = job_commands(job, mounts, configmap)
    assert [c for c, _, _ in cmds] == ["encode", "encode", "eval"]
    cfg = cmds[0][2]
    assert cmds[1][2] == cfg and cfg == train[0][2], "eval must use the training job's config"
    run_dir = PurePosixPath(cfg.cluster.storage_path) / cfg.cluster.name
    outs = {}
    for _, opts, _ in cmds[:2]:
        assert opts["--checkpoint"] == ["best"]
        (split,), (out,) = opts["--split"], opts["--out"]
        assert PurePosixPath(out).is_relative_to(run_dir), out
        outs[split] = out
    evals = cmds[2][1]
    assert set(outs) == {"test", "train"}
    assert evals["--query"] == [outs["test"]] and evals["--db"] == [outs["train"]]
    assert PurePosixPath(evals["--json"][0]).is_relative_to(run_dir)
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    worker = groups[0]["template"]["spec"]["containers"][0]
    # each eval shard is a Ray task taking one CPU beside the entrypoint's reservation
    assert 1 <= int(evals["--shards"][0]) <= cpus(worker) - job["spec"].get("entrypointNumCpus", 0)
    assert job["spec"].get("entrypointNumGpus", 0) == 0, "the driver needs no GPU: the encoder actors take them"
    # encoding is sharded over every GPU of the cluster: one encoder actor per GPU, its threads within the pod
    total_gpus = sum(g["replicas"] * gpus(g["template"]["spec"]["containers"][0]) for g in groups)
    for _, opts, _ in cmds[:2]:
        assert opts["--device"] == ["gpu"] and int(opts["--workers"][0]) == total_gpus
        assert int(opts["--threads"][0]) * gpus(worker) <= cpus(worker)


def test_volumes_claims_and_configmaps_resolve(base, every):
    claims = {d["metadata"]["name"] for d in base if d["kind"] == "PersistentVolumeClaim"}
    maps = {d["metadata"]["name"] for d in base if d["kind"] == "ConfigMap"}
    for where, _, template in pod_templates(every):
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for v in volumes.values():
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            cmap = (v.get("configMap") or {}).get("name")
            assert claim in claims | {None} and cmap in maps | {None}, f"{where}: volume {v['name']}"
        for c in containers(template):
            assert {m["name"] for m in c.get("volumeMounts", [])} <= set(volumes), f"{where}/{c['name']}"
    for d in base:
        if d["kind"] == "PersistentVolumeClaim":
            assert d["spec"]["accessModes"] == ["ReadWriteMany"], d["metadata"]["name"]
    assert ray_mounts(every) == {"c3dhash-configs": "/config", "c3dhash-datasets": "/data",
                                 "c3dhash-results": "/results"}


def test_ray_pods_have_a_memory_backed_dev_shm(every):
    for where, role, template in pod_templates(every):
        if role in ("head", "worker"):
            _, vol = mounts_by_path(template, template["spec"]["containers"][0])["/dev/shm"]
            assert vol["emptyDir"]["medium"] == "Memory" and vol["emptyDir"]["sizeLimit"], where


def test_tensorboard_reads_the_directory_training_writes(base):
    dep = one(base, "Deployment", "c3dhash-tensorboard")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    logdir = PurePosixPath(args[args.index("--logdir") + 1])
    _, vol = mounts_by_path(dep["spec"]["template"], container)[str(logdir)]
    assert vol["persistentVolumeClaim"]["claimName"] == "c3dhash-results"
    assert ray_mounts(base)["c3dhash-results"] == str(logdir)
    for key in one(base, "ConfigMap", "c3dhash-configs")["data"]:
        cfg = load_config(K8S / "configs" / key)
        events = PurePosixPath(cfg.cluster.storage_path) / cfg.cluster.name / "tensorboard"
        assert events.is_relative_to(logdir), f"{key}: TensorBoard would not see {events}"


def test_every_resource_lands_in_the_namespace(rendered, base):
    (ns,) = [d["metadata"]["name"] for d in base if d["kind"] == "Namespace"]
    for where, docs in rendered.items():
        assert yaml.safe_load((REPO / where / "kustomization.yaml").read_text())["namespace"] == ns
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == ns, f"{where}: {d['kind']}/{d['metadata']['name']}"


def test_manifests_run_the_image_built_for_the_pinned_ray(every):
    component = yaml.safe_load((K8S / "image" / "kustomization.yaml").read_text())
    (img,) = component["images"]
    assert f"ray{RAY_PIN}" in img["newTag"], "bump the image tag with the Ray pin"
    images = {c["image"] for _, _, t in pod_templates(every) for c in containers(t)}
    assert images == {f"{img['newName']}:{img['newTag']}"}


def test_serve_overlay_runs_the_cli_application_with_a_token_on_a_read_only_index(rendered):
    """The RayService's serveConfigV2 is a config `c3dhash serve --write-config` would write: its args parse
    into a ServeConfig with a token file from the Secret and an index on the read-only results volume."""
    from c3dhash.cluster.serve.app import ServeConfig
    (svc,) = [d for d in rendered["k8s/serve"] if d["kind"] == "RayService"]
    serve = yaml.safe_load(svc["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "c3dhash.cluster.serve.app:app_builder" and app["route_prefix"] == "/"
    cfg = ServeConfig.from_args(app["args"])
    assert cfg.token_file and serve["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert "serveService" not in svc["spec"], "KubeRay's default serve Service is ClusterIP"
    for _, _, template in pod_templates([svc]):
        mounts = mounts_by_path(template, template["spec"]["containers"][0])
        token_dir = str(PurePosixPath(cfg.token_file).parent)
        token_mount, token_vol = mounts[token_dir]
        assert token_vol["secret"]["secretName"] == "c3dhash-serve-token" and token_mount["readOnly"] is True
        (root,) = [p for p in mounts if PurePosixPath(cfg.index).is_relative_to(p)]
        mount, vol = mounts[root]
        assert mount["readOnly"] is True and vol["persistentVolumeClaim"]["readOnly"] is True
