"""Drives the holdfast API server with the official Python `kubernetes` client.

Usage: python3 kubernetes_client.py KUBECONFIG
Prints one `step value` line per check and `done` at the end; any failure raises (non-zero exit).
The Rust test tests/python_client.rs starts the server and asserts on these lines.
"""
import base64
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def out(*parts):
    print(*parts, flush=True)


config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
custom = client.CustomObjectsApi()
out("version", client.VersionApi().get_code().git_version.split("-")[0])

NS = "py"
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
out("namespace", core.read_namespace(NS).status.phase)

# A custom object: create, get, list, merge patch, watch from the list's revision.
GROUP, VERSION, PLURAL = "velero.io", "v1", "podvolumerestores"
pvr = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "PodVolumeRestore",
    "metadata": {"name": "r1", "labels": {"app": "py"}},
    "spec": {
        "pod": {"kind": "Pod", "namespace": NS, "name": "runner"},
        "volume": "data",
        "backupStorageLocation": "default",
        "repoIdentifier": "",
        "snapshotID": "abc123",
        "sourceNamespace": NS,
    },
}
created = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, pvr)
out("created", created["metadata"]["name"], created["metadata"]["generation"])
listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector="app=py")
out("listed", ",".join(i["metadata"]["name"] for i in listed["items"]), listed["kind"])
list_rv = listed["metadata"]["resourceVersion"]
patched = custom.patch_namespaced_custom_object(
    GROUP, VERSION, NS, PLURAL, "r1", {"spec": {"cancel": True}}
)
out("patched", patched["spec"]["cancel"], patched["metadata"]["generation"])

seen = []
w = watch.Watch()
for event in w.stream(
    custom.list_namespaced_custom_object,
    GROUP,
    VERSION,
    NS,
    PLURAL,
    resource_version=list_rv,
    timeout_seconds=10,
):
    seen.append(event["type"])
    if event["type"] == "MODIFIED":
        out("watched", event["type"], event["object"]["spec"]["cancel"],
            event["object"]["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"])
        w.stop()
if "MODIFIED" not in seen:
    raise SystemExit(f"no MODIFIED event, saw {seen}")

# Core kinds: a Secret from stringData, a ConfigMap, a typed watch, a Pod's log.
core.create_namespaced_secret(
    NS, client.V1Secret(metadata=client.V1ObjectMeta(name="s1"), string_data={"password": "hunter2"})
)
secret = core.read_namespaced_secret("s1", NS)
out("secret", secret.type, base64.b64decode(secret.data["password"]).decode())
cm = core.create_namespaced_config_map(
    NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c1", labels={"app": "py"}), data={"k": "v"})
)
core.patch_namespaced_config_map("c1", NS, {"data": {"k": "v2"}})
cms = core.list_namespaced_config_map(NS, label_selector="app=py")
out("configmaps", [(c.metadata.name, c.data["k"]) for c in cms.items])
w = watch.Watch()
for event in w.stream(core.list_namespaced_config_map, NS, resource_version=cm.metadata.resource_version,
                      timeout_seconds=10):
    out("configmap-event", event["type"], type(event["object"]).__name__, event["object"].data["k"])
    w.stop()

core.create_namespaced_pod(NS, client.V1Pod(
    metadata=client.V1ObjectMeta(name="runner"),
    spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox")],
                          restart_policy="Never"),
))
out("log", repr(core.read_namespaced_pod_log("runner", NS, tail_lines=1)))

# Deletes, and the errors the client raises.
custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "r1")
try:
    custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "r1")
    raise SystemExit("r1 still there")
except ApiException as e:
    out("gone", e.status, e.reason)
core.delete_namespaced_secret("s1", NS)
try:
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c1")))
    raise SystemExit("duplicate create succeeded")
except ApiException as e:
    out("conflict", e.status, __import__("json").loads(e.body)["reason"])
core.delete_namespace(NS)
out("done")
