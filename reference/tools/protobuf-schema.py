#!/usr/bin/env python3
"""Writes reference/src/apiserver/protobuf/schema.txt: the wire layout of every
Kubernetes protobuf message, which the apiserver's protobuf decoder walks.

Run it after upgrading k8s-pb or k8s-openapi:

    python3 reference/tools/protobuf-schema.py > reference/src/apiserver/protobuf/schema.txt

Where each fact comes from:
* field numbers and types: the prost attributes of the `k8s-pb` crate's
  generated messages (`#[prost(string, optional, tag = "1")]`);
* JSON field names: the `k8s-openapi` crate's deserializers
  (`"podIP" => Field::Key_pod_ip`), because prost's snake_case names lose the
  casing of acronyms (`pod_ip` is `podIP`, not `podIp`);
* inlining: a message field that k8s-openapi does not know, whose own fields
  k8s-openapi places on the parent, is a Go struct embedded in JSON (a probe's
  `ProbeHandler`, a volume's `VolumeSource`); it is marked `^`.

Output: one block per message, its name dropping the `api.` and
`apimachinery.pkg.apis.` / `apimachinery.pkg.` prefixes, then one line per
field: `<number> <json name> <type>`, where the type is string, int32, int64,
bool, bytes, double or a message name, suffixed `[]` when repeated; a map
(always with string keys) is `{<value type>}`.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ("api", "apimachinery")


def crate_dir(name):
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--manifest-path",
         os.path.join(ROOT, "Cargo.toml")]))
    for package in meta["packages"]:
        if package["name"] == name:
            return package["version"], os.path.dirname(package["manifest_path"])
    sys.exit(f"{name} is not a dependency")


def short(module):
    name = ".".join(module)
    for prefix in ("apimachinery.pkg.apis.", "apimachinery.pkg.", "api."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def squash(rust_name):
    """A field name with case and underscores gone: prost writes `pod_cid_rs`
    where k8s-openapi writes `pod_cidrs`, both for `podCIDRs`."""
    return rust_name.replace("_", "").lower()


def json_names(openapi_src):
    """(module path, struct) -> {rust field: json name} from k8s-openapi."""
    versions = sorted(d for d in os.listdir(openapi_src) if d.startswith("v1_"))
    base = os.path.join(openapi_src, versions[-1])
    names = {}
    for directory, _, files in os.walk(base):
        module = tuple(os.path.relpath(directory, base).split(os.sep))
        for file in files:
            text = open(os.path.join(directory, file)).read()
            struct = re.search(r"^pub struct (\w+)", text, re.M)
            if not struct:
                continue
            fields = dict((squash(rust), name) for name, rust in
                          re.findall(r'"([^"]+)" => Field::Key_(\w+),', text))
            names[(module, struct.group(1))] = fields
    return versions[-1], names


FIELD = re.compile(r"#\[prost\(([^\]]*)\)\]\s*pub (?:r#)?(\w+):\s*([^;]*?),\s*\n(?=\s*(?:///|#|pub|\}|$))",
                   re.S)
SCALARS = {"string": "string", "int32": "int32", "int64": "int64", "bool": "bool",
           "bytes = \"vec\"": "bytes", "double": "double"}


def resolve(module, rust_type):
    """The message a Rust type path names, as (module, name)."""
    path = rust_type.split("::")
    here = list(module)
    while path and path[0] == "super":
        here.pop()
        path.pop(0)
    return tuple(here + path[:-1]), path[-1]


def message_type(module, rust_type):
    inner = rust_type
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<",
                    "::prost::alloc::boxed::Box<"):
        if inner.startswith(wrapper):
            inner = inner[len(wrapper):-1]
    inner = inner.replace(" ", "").replace("\n", "")
    if inner.startswith("::prost::alloc::boxed::Box<"):
        inner = inner[len("::prost::alloc::boxed::Box<"):-1]
    return resolve(module, inner)


def messages(pb_src):
    found = {}
    for group in GROUPS:
        for directory, _, files in os.walk(os.path.join(pb_src, group)):
            if "mod.rs" not in files:
                continue
            module = tuple(os.path.relpath(directory, pb_src).split(os.sep))
            text = open(os.path.join(directory, "mod.rs")).read()
            for empty in re.findall(r"^pub struct (\w+) \{\}$", text, re.M):
                found[(module, empty)] = []
            for struct in re.finditer(r"^pub struct (\w+) \{\n(.*?)^\}", text, re.M | re.S):
                fields = []
                for attrs, name, rust_type in FIELD.findall(struct.group(2)):
                    # rustfmt splits long types over lines, with a trailing comma.
                    rust_type = re.sub(r"\s+", "", rust_type).replace(",>", ">")
                    tag = int(re.search(r'tag = "(\d+)"', attrs).group(1))
                    kind = attrs.split(",")[0].strip()
                    repeated = "repeated" in attrs
                    if kind.startswith("btree_map"):
                        value = re.search(r'btree_map = "string, (\w+)"', attrs).group(1)
                        if value == "message":
                            value_rust = rust_type.replace(" ", "").replace("\n", "")
                            value_rust = value_rust.split(",", 1)[1][:-1]
                            value = message_type(module, value_rust)
                        else:
                            value = SCALARS["bytes = \"vec\"" if value == "bytes" else value]
                        fields.append((tag, name, ("map", value), False))
                    elif kind == "message":
                        fields.append((tag, name, message_type(module, rust_type), repeated))
                    else:
                        fields.append((tag, name, SCALARS[kind], repeated))
                found[(module, struct.group(1))] = fields
    return found


def type_name(t):
    if isinstance(t, tuple) and t and t[0] == "map":
        return "{" + type_name(t[1]) + "}"
    if isinstance(t, tuple):
        return short(t[0]) + "." + t[1]
    return t


def main():
    pb_version, pb_dir = crate_dir("k8s-pb")
    openapi_version, openapi_dir = crate_dir("k8s-openapi")
    api_version, names = json_names(os.path.join(openapi_dir, "src"))
    found = messages(os.path.join(pb_dir, "src"))
    print(f"# Generated by reference/tools/protobuf-schema.py from k8s-pb {pb_version} and "
          f"k8s-openapi {openapi_version} ({api_version}). Do not edit.")
    unnamed = []
    for (module, struct), fields in sorted(found.items()):
        known = names.get((module, struct))
        print(short(module) + "." + struct)
        for tag, name, t, repeated in sorted(fields):
            json_name = known.get(squash(name)) if known else None
            if known is not None and json_name is None and t in found and not repeated:
                if any(squash(inner) in known for _, inner, _, _ in found[t]):
                    json_name = "^"
            if json_name is None:
                json_name = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
                if known is not None:
                    unnamed.append(f"{short(module)}.{struct}.{name}")
            print(f" {tag} {json_name} {type_name(t)}{'[]' if repeated else ''}")
    for field in unnamed:
        print(f"k8s-openapi does not name {field}; camelCased it", file=sys.stderr)


main()
