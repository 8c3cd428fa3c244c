#!/bin/bash
# Start or stop a local Kubernetes control plane on 127.0.0.1 from the binaries scripts/k8s/build.sh made:
# etcd + kube-apiserver (HTTPS, bearer-token auth, RBAC) + kube-controller-manager (deployment, replicaset,
# garbage-collector, namespace controllers). There is no scheduler, kubelet or network plugin: pods stay Pending
# unless something marks them Running through the pods/status subresource (the tests do), NetworkPolicies are
# stored and validated but not enforced, and Services route nothing.
#
# Usage: scripts/k8s/cluster.sh start STATE_DIR [BIN_DIR]   -> writes STATE_DIR/kubeconfig, prints KUBECONFIG=...
#        scripts/k8s/cluster.sh stop  STATE_DIR              -> stops the three processes by their pid files
#   BIN_DIR defaults to ${AIIR_K8S_CACHE:-/var/cache/aiir/k8s}/bin.
#   Ports (override with env): ETCD_PORT=23790 ETCD_PEER_PORT=23800 KUBE_PORT=16443 KCM_PORT=10257
#   (the tests pass free ports). The admin token is fresh and random on every start.
set -euo pipefail
cmd=${1:?start|stop}; S=${2:?state dir}; B=${3:-${AIIR_K8S_CACHE:-/var/cache/aiir/k8s}/bin}
ETCD_PORT=${ETCD_PORT:-23790}; ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}; KUBE_PORT=${KUBE_PORT:-16443}; KCM_PORT=${KCM_PORT:-10257}
stop() {
  for p in kube-controller-manager kube-apiserver etcd; do
    [ -f "$S/$p.pid" ] || continue
    pid=$(cat "$S/$p.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$S/$p.pid"
  done
}
case "$cmd" in
stop) stop; exit 0;;
start) ;;
*) echo "usage: cluster.sh start|stop STATE_DIR [BIN_DIR]" >&2; exit 2;;
esac
for b in etcd kube-apiserver kube-controller-manager; do
  [ -x "$B/$b" ] || { echo "missing $B/$b: run scripts/k8s/build.sh first" >&2; exit 2; }
done
mkdir -p "$S/pki/serving"; S=$(cd "$S" && pwd); rm -rf "$S/etcd-data" "$S/audit.log"
[ -f "$S/pki/sa.key" ] || { openssl genrsa -out "$S/pki/sa.key" 2048 2>/dev/null
                            openssl rsa -in "$S/pki/sa.key" -pubout -out "$S/pki/sa.pub" 2>/dev/null; }
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,admin,admin,system:masters" > "$S/pki/tokens.csv"; chmod 600 "$S/pki/tokens.csv"
umask 077
cat > "$S/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$KUBE_PORT", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: $TOKEN}
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
KC
umask 022
# Audit every request a ServiceAccount makes (metadata only): tests compare the calls with deploy/kubernetes/rbac.yaml
cat > "$S/audit-policy.yaml" <<AP
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
AP
setsid "$B/etcd" --name local --data-dir "$S/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" > "$S/etcd.log" 2>&1 < /dev/null &
echo $! > "$S/etcd.pid"
setsid "$B/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$KUBE_PORT" --insecure-port=0 --cert-dir="$S/pki/serving" \
  --advertise-address=127.0.0.1 \
  --service-cluster-ip-range=10.96.0.0/24 --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$S/pki/sa.pub" --service-account-signing-key-file="$S/pki/sa.key" \
  --token-auth-file="$S/pki/tokens.csv" --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount \
  --audit-policy-file="$S/audit-policy.yaml" --audit-log-path="$S/audit.log" \
  > "$S/kube-apiserver.log" 2>&1 < /dev/null &
echo $! > "$S/kube-apiserver.pid"
for i in $(seq 1 240); do
  curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$KUBE_PORT/readyz" 2>/dev/null | grep -q '^ok$' && break
  kill -0 "$(cat "$S/kube-apiserver.pid")" 2>/dev/null || { echo "kube-apiserver exited; see $S/kube-apiserver.log" >&2; stop; exit 1; }
  sleep 0.25
  [ "$i" = 240 ] && { echo "kube-apiserver not ready after 60 s; see $S/kube-apiserver.log" >&2; stop; exit 1; }
done
# The API server made its own CA + serving certificate (for 127.0.0.1) in the cert dir: trust exactly that
# from now on (no insecure-skip-tls-verify for the clients).
sed -i "s#{server: \"https://127.0.0.1:$KUBE_PORT\", insecure-skip-tls-verify: true}#{server: \"https://127.0.0.1:$KUBE_PORT\", certificate-authority: $S/pki/serving/apiserver.crt}#" "$S/kubeconfig"
grep -q certificate-authority "$S/kubeconfig" || { echo "could not pin the API server certificate" >&2; stop; exit 1; }
setsid "$B/kube-controller-manager" --kubeconfig="$S/kubeconfig" \
  --controllers=deployment,replicaset,garbagecollector,namespace --leader-elect=false --port=0 \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --authentication-skip-lookup=true \
  --authorization-always-allow-paths=/healthz --authentication-kubeconfig="$S/kubeconfig" \
  --authorization-kubeconfig="$S/kubeconfig" > "$S/kube-controller-manager.log" 2>&1 < /dev/null &
echo $! > "$S/kube-controller-manager.pid"
echo "KUBECONFIG=$S/kubeconfig"
