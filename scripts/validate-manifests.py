#!/usr/bin/env python3
"""Validates manifests offline, without a cluster.

    scripts/validate-manifests.py --crds CRDS.yaml FILE_OR_DIR...

Every object of the given YAML files (directories: their *.yaml files, recursively) is checked:
  - a Kubernetes built-in kind (CustomResourceDefinitions included) against the Kubernetes
    OpenAPI schemas of `kubernetes-validate` (strict: unknown fields are errors);
  - a kind one of the CRDs in CRDS.yaml defines, against that CRD's openAPIV3Schema for the
    object's version (unknown fields are errors unless the schema preserves them).
An object of a kind neither knows is an error. Prints one line per problem; exits 1 if any.
"""

import argparse
import copy
import glob
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.32.0"


def documents(path):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                yield doc


def files(args):
    for a in args:
        if os.path.isdir(a):
            yield from sorted(glob.glob(os.path.join(a, "**", "*.yaml"), recursive=True))
        else:
            yield a


def strict(schema):
    """The CRD schema as JSON Schema: `nullable` becomes a null type, and objects without
    x-kubernetes-preserve-unknown-fields refuse properties they do not declare, as the API
    server's pruning would drop them silently (a typo in a manifest is an error here)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if node.get("type") == "object" and "properties" in node \
                and not node.get("x-kubernetes-preserve-unknown-fields") \
                and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            walk(node.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(s)
    # The type and object meta are the API server's, not described by the CRD.
    props = s.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    return s


def crd_schemas(path):
    out = {}
    for crd in documents(path):
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = v.get("schema", {}).get("openAPIV3Schema")
            if schema:
                out[(f"{group}/{v['name']}", kind)] = strict(schema)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crds", required=True, help="the CRDs the custom kinds are checked against")
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args()
    custom = crd_schemas(a.crds)
    problems, checked = [], 0
    for path in files(a.paths):
        for obj in documents(path):
            api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
            name = f"{path}: {kind} {obj.get('metadata', {}).get('name', '?')}"
            checked += 1
            schema = custom.get((api, kind))
            if schema is not None:
                errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
                problems += [f"{name}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                             for e in errors]
                continue
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name}: no schema for {api} {kind}")
            except kubernetes_validate.ValidationError as e:
                where = ".".join(map(str, e.path)) or "<root>"
                problems.append(f"{name}: {where}: {e.message}")
    for p in problems:
        print(p)
    if checked == 0:
        print("no objects found")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
