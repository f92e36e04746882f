#!/usr/bin/env python3
"""Writes the aigw OCI image (FROM scratch) as an OCI image layout archive.

No container engine, no privileges, Python standard library only. The output
is reproducible: one layer whose tar entries are sorted, owned by numeric ids
and stamped with SOURCE_DATE_EPOCH; gzip without name or time; JSON with
sorted keys. The same inputs give the same bytes, hence the same digests.

    SOURCE_DATE_EPOCH=... mkimage.py --binary B --ca-bundle C --license L \
        --cargo-toml Cargo.toml --out dist/aigw-<version>-oci.tar [--revision SHA]

Load it with `skopeo copy oci-archive:<file>:<version> ...` or `podman load -i`.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tomllib

UID = 65532  # the image's non-root user ("nonroot" in distroless images)
PORTS = (5052, 50052, 8082, 8083)  # HTTP API, gRPC, AI Gateway and Duo Workflow metrics
ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    # GitLab's self-hosted image: the API on 5052 on every interface, custom
    # models on. Deliberately no SSL_CERT_FILE: it would turn a missing bundle
    # into a startup error instead of the compiled-in roots fallback, and
    # override an operator's REQUESTS_CA_BUNDLE-less setup.
    "AIGW_FASTAPI__API_HOST=0.0.0.0",
    "AIGW_FASTAPI__API_PORT=5052",
    "AIGW_CUSTOM_MODELS__ENABLED=true",
    # Where the packages keep it too (README "Documentation search offline"):
    # in the state directory, so one volume there carries it.
    "AIGW_DOCS_SEARCH__DB_PATH=/var/lib/aigw/docs.db",
)

MT_LAYOUT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Tar:
    """A deterministic tar writer: every header field is chosen, none read from disk."""

    def __init__(self, mtime: int):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.mtime = mtime
        self.entries = []

    def dir(self, name, mode=0o755, uid=0):
        self.entries.append((name, tarfile.DIRTYPE, mode, uid, b""))

    def file(self, name, data: bytes, mode=0o644, uid=0):
        self.entries.append((name, tarfile.REGTYPE, mode, uid, data))

    def bytes(self) -> bytes:
        for name, kind, mode, uid, data in sorted(self.entries):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.uid = info.gid = uid
            info.uname = info.gname = ""
            info.mtime = self.mtime
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        self.tar.close()
        return self.buf.getvalue()


def rootfs_layer(binary: bytes, ca_bundle: bytes, license_text: bytes, mtime: int) -> bytes:
    t = Tar(mtime)
    for d in ("etc", "etc/ssl", "etc/ssl/certs", "usr", "usr/bin", "usr/share",
              "usr/share/doc", "usr/share/doc/aigw", "var", "var/lib"):
        t.dir(d)
    t.dir("tmp", mode=0o1777)
    t.dir("var/lib/aigw", mode=0o700, uid=UID)
    t.file("usr/bin/aigw", binary, mode=0o755)
    t.file("etc/ssl/certs/ca-certificates.crt", ca_bundle)
    t.file("usr/share/doc/aigw/LICENSE", license_text)
    t.file("etc/passwd", (
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"aigw:x:{UID}:{UID}:aigw:/var/lib/aigw:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n").encode())
    t.file("etc/group", (
        "root:x:0:\n"
        f"aigw:x:{UID}:\n"
        "nogroup:x:65534:\n").encode())
    # musl resolves "localhost" only through /etc/hosts. Container runtimes
    # mount their own; this one serves chroot/nspawn-style use.
    t.file("etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    return t.bytes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--ca-bundle", required=True)
    ap.add_argument("--license", required=True)
    ap.add_argument("--cargo-toml", default="Cargo.toml")
    ap.add_argument("--revision", default="", help="VCS revision for the label (optional)")
    ap.add_argument("--out", required=True, help="the OCI layout archive (.tar) to write")
    args = ap.parse_args()

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch or not epoch.isdigit():
        print("mkimage: SOURCE_DATE_EPOCH must be set (seconds since 1970)", file=sys.stderr)
        return 2
    epoch = int(epoch)
    created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    with open(args.cargo_toml, "rb") as f:
        package = tomllib.load(f)["package"]
    name, version = package["name"], package["version"]

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    binary, ca_bundle = read(args.binary), read(args.ca_bundle)
    if not binary.startswith(b"\x7fELF"):
        print(f"mkimage: {args.binary} is not an ELF binary", file=sys.stderr)
        return 2
    if b"-----BEGIN CERTIFICATE-----" not in ca_bundle:
        print(f"mkimage: {args.ca_bundle} holds no PEM certificate", file=sys.stderr)
        return 2

    layer_tar = rootfs_layer(binary, ca_bundle, read(args.license), epoch)
    layer_gz = gzip.compress(layer_tar, compresslevel=9, mtime=0)

    labels = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.description": package.get("description", ""),
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": package.get("license", ""),
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.vendor": "the aigw authors",
    }
    if args.revision:
        labels["org.opencontainers.image.revision"] = args.revision
    config = canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": f"{UID}:{UID}",
            "ExposedPorts": {f"{p}/tcp": {} for p in PORTS},
            "Env": list(ENV),
            "Entrypoint": ["/usr/bin/aigw"],
            "WorkingDir": "/var/lib/aigw",
            "StopSignal": "SIGTERM",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created": created, "created_by": "packaging/oci/mkimage.py"}],
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": sha256(layer_gz), "size": len(layer_gz)}],
        "annotations": {k: v for k, v in labels.items() if k != "org.opencontainers.image.description"},
    })
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_LAYOUT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": sha256(manifest),
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                # skopeo/podman: oci-archive:<file>:<version>
                "org.opencontainers.image.ref.name": version,
                # docker load (>= 25) names the image after this one
                "io.containerd.image.name": f"docker.io/library/{name}:{version}",
            },
        }],
    })

    out = Tar(epoch)
    out.file("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
    out.file("index.json", index)
    out.dir("blobs")
    out.dir("blobs/sha256")
    for blob in (layer_gz, config, manifest):
        out.file("blobs/sha256/" + sha256(blob).split(":", 1)[1], blob)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out.bytes())
    os.replace(tmp, args.out)
    print(f"mkimage: {args.out}: {name}:{version} manifest {sha256(manifest)}, "
          f"layer {len(layer_gz)} bytes gzip ({len(layer_tar)} tar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
