#!/bin/bash
# Build a real kube-apiserver + kube-controller-manager (v1.20.2) and take etcd 3.4.23, using only Debian bookworm's
# packages: the source package `kubernetes`, and the binary packages golang-1.19-go/-src, etcd-server, etcd-client,
# golang-github-modern-go-reflect2-dev. Nothing is installed system-wide: apt runs with a private state under the
# cache dir and the debs are unpacked with dpkg-deb -x. Source lines are derived from the machine's own apt sources.
#
# Usage: scripts/k8s/build.sh [CACHE_DIR]
#   CACHE_DIR defaults to ${AIIR_K8S_CACHE:-/var/cache/aiir/k8s} (outside the repository; ~2.5 GB; 6-12 min on
#   2 cores). The binaries land in CACHE_DIR/bin. A second run is a no-op (prints the bin dir and exits 0).
#   Concurrent runs serialise on CACHE_DIR/.lock.
#
# Three fixes were needed, each found by failure (see docs/targets.md, "Kubernetes"):
#   1. the vendored reflect2 1.0.1 crashes under Go >= 1.18 on any ?pretty=true read (which Airflow's KubernetesHook
#      sends): replaced by Debian's 1.0.2;
#   2. Kubernetes 1.20 builds in GOPATH mode (GO111MODULE=off);
#   3. pkg/generated/openapi is not in the tarball: generated with the vendored openapi-gen.
set -euo pipefail
W=${1:-${AIIR_K8S_CACHE:-/var/cache/aiir/k8s}}
built() { [ -x "$W/bin/kube-apiserver" ] && [ -x "$W/bin/kube-controller-manager" ] && [ -x "$W/bin/etcd" ] \
          && [ -f "$W/bin/.complete" ]; }
if built; then echo "kube binaries already built in $W/bin"; exit 0; fi
mkdir -p "$W"
exec 9>"$W/.lock"
flock 9
if built; then echo "kube binaries already built in $W/bin"; exit 0; fi
W=$(cd "$W" && pwd)
start=$(date +%s)
mkdir -p "$W"/{apt/lists/partial,apt/cache/archives/partial,debs,root,src,bin,gocache}
cd "$W"
src=/etc/apt/sources.list.d/debian.sources
[ -f "$src" ] || { echo "no $src on this machine (need Debian bookworm apt sources)" >&2; exit 2; }
sed 's/^Types: deb$/Types: deb deb-src/' "$src" > apt/debian.sources
APT=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$W/apt" -o Dir::State::Lists="$W/apt/lists"
     -o Dir::Cache="$W/apt/cache" -o APT::Sandbox::User=root)
apt-get "${APT[@]}" -qq update
if ! ls src/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  (cd src && apt-get "${APT[@]}" -qq source --download-only kubernetes)
fi
(cd debs && apt-get "${APT[@]}" -qq download golang-1.19-go golang-1.19-src etcd-server etcd-client \
   golang-github-modern-go-reflect2-dev)
for f in debs/*.deb; do dpkg-deb -x "$f" root; done
K=$(ls -d src/kubernetes-1.*/ 2>/dev/null | head -1 || true)
if [ -z "$K" ]; then tar xzf src/kubernetes_*.orig.tar.gz -C src; K=$(ls -d src/kubernetes-1.*/ | head -1); fi
K=${K%/}
# Fix 1: the vendored reflect2 v1.0.1 crashes under Go >= 1.18 (any ?pretty=true read): use Debian's 1.0.2
rm -rf "$K/vendor/github.com/modern-go/reflect2" && mkdir -p "$K/vendor/github.com/modern-go/reflect2"
cp root/usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$K/vendor/github.com/modern-go/reflect2/"
cp root/usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$K/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true
rm -f "$K"/vendor/github.com/modern-go/reflect2/*_test.go
# Fix 2: Kubernetes 1.20 builds in GOPATH mode
mkdir -p gopath/src/k8s.io && ln -sfn "$W/$K" gopath/src/k8s.io/kubernetes
export GOROOT="$W/root/usr/lib/go-1.19" PATH="$W/root/usr/lib/go-1.19/bin:$PATH"
export GOPATH="$W/gopath" GOCACHE="$W/gocache" GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS=
cd gopath/src/k8s.io/kubernetes
# Fix 3: generate pkg/generated/openapi (not in the tarball)
if [ ! -f pkg/generated/openapi/zz_generated.openapi.go ]; then
  go build -o "$W/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  DIRS=$(find -H . \( -not \( \( -path ./_\* -o -path ./.\* -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
         | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u)
  TAGF=$(for d in $DIRS; do find "$d" -maxdepth 1 -type f -name '*.go'; done | xargs grep -l '^// *+k8s:' \
         | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/')
  IN=$(grep -l '+k8s:openapi-gen=' $TAGF | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  "$W/bin/openapi-gen" --logtostderr -i "$IN" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h hack/boilerplate/boilerplate.generatego.txt -r "$W/openapi_violations.report" 2>/dev/null
fi
V=k8s.io/kubernetes/vendor; LD="-s -w"
for p in $V/k8s.io/component-base/version $V/k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=v1.20.2 -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitTreeState=clean"
done
for c in kube-apiserver kube-controller-manager; do
  s=$(date +%s); go build -p "$(nproc)" -ldflags "$LD" -o "$W/bin/$c.tmp" "./cmd/$c"; mv "$W/bin/$c.tmp" "$W/bin/$c"
  echo "built $c in $(( $(date +%s)-s ))s"
done
cp "$W/root/usr/bin/etcd" "$W/root/usr/bin/etcdctl" "$W/bin/"
"$W/bin/kube-apiserver" --version; "$W/bin/etcd" --version | sed -n 1p  # sed reads everything: no SIGPIPE under pipefail
touch "$W/bin/.complete"
echo "kube binaries built in $W/bin in $(( $(date +%s)-start ))s"
