"""Offline tooling for tests/test_k8s.py and tests/test_k8s_security.py, one module per concern; this index
re-exports them so tests import from one place:

    k8s_render     what `kubectl apply -k` sends: kubectl kustomize, or a kustomize subset renderer
    k8s_schema     strict validation against the vendored Kubernetes / KubeRay schemas
    k8s_walk       pod templates, containers, mounts and resources of rendered documents
    k8s_shell      how KubeRay's submitter shell splits an entrypoint into c3dhash commands
    k8s_netpol     NetworkPolicy ingress semantics
    k8s_packaging  setup.cfg, Dockerfile and .dockerignore readers
"""
from k8s_netpol import ingress_allowed, selector_matches
from k8s_packaging import (dockerfile_instructions, dockerignore_excludes, read_dockerignore, setup_cfg_packages,
                           setup_cfg_pins)
from k8s_render import (K8S, REPO, RenderError, doc_key, kubectl, kustomizations, render, render_kubectl,
                        render_subset)
from k8s_schema import CORE_VERSION, SCHEMAS_ENV, schema_checksum_problems, schema_dir, schema_errors, strict
from k8s_shell import command_argvs, parse_commands, shell_words, submitted_argv
from k8s_walk import containers, cpus, gpus, mounts_by_path, pod_templates, ray_cluster_specs

__all__ = ["CORE_VERSION", "K8S", "REPO", "RenderError", "SCHEMAS_ENV", "command_argvs", "containers", "cpus",
           "doc_key", "dockerfile_instructions", "dockerignore_excludes", "gpus", "ingress_allowed", "kubectl",
           "kustomizations", "mounts_by_path", "parse_commands", "pod_templates", "ray_cluster_specs",
           "read_dockerignore", "render", "render_kubectl", "render_subset", "schema_checksum_problems",
           "schema_dir", "schema_errors", "selector_matches", "setup_cfg_packages", "setup_cfg_pins",
           "shell_words", "strict", "submitted_argv"]
