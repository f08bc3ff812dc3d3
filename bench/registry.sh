#!/usr/bin/env bash
# Push and pull throughput of berth's registry client against skopeo, on
# loopback against berth's embedded registry. Prints MB/s and berth/skopeo.
#
#   bench/registry.sh [SIZE_MB=200] [LAYERS=3]
set -euo pipefail
shopt -s inherit_errexit
size=${1:-200}
layers=${2:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
cleanup() {
	for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
command -v skopeo >/dev/null || { echo "skopeo not installed" >&2; exit 1; }

(cd "$repo" && go build -o "$work/registryd" ./test/conformance/registryd && go build -o "$work/bench" ./bench/registrybench)

# One registry per client so neither finds the other's blobs.
# start_registry NAME VAR starts one and stores its host:port in VAR.
start_registry() {
	local port
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	"$work/registryd" -addr "127.0.0.1:$port" -root "$work/root-$1" >/dev/null 2>&1 &
	echo $! >"$work/registryd-$1.pid"
	for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
	printf -v "$2" '127.0.0.1:%s' "$port"
}
start_registry berth reg_berth
start_registry skopeo reg_skopeo

echo "generating a ${size} MB, ${layers}-layer random image…"
"$work/bench" gen "$work/src" "$size" "$layers"
bytes=$(du -sb "$work/src/blobs" | cut -f1)
mb=$(echo "scale=1; $bytes/1000000" | bc)

policy="$work/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$policy"
sk() { skopeo --policy "$policy" copy -q "$@"; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }

t_push_berth=$("$work/bench" push "$work/src" "$reg_berth/bench/img:1")
t_push_skopeo=$(secs sk --dest-tls-verify=false "oci:$work/src:img" "docker://$reg_skopeo/bench/img:1")
t_pull_berth=$("$work/bench" pull "$reg_berth/bench/img:1" "$work/dst-berth")
t_pull_skopeo=$(secs sk --src-tls-verify=false "docker://$reg_skopeo/bench/img:1" "oci:$work/dst-skopeo:img")

rate() { echo "scale=1; $mb/$1" | bc; }
printf '%-6s %8s %10s %10s %8s\n' op MB berth_MB/s skopeo_MB/s ratio
printf '%-6s %8s %10s %10s %8s\n' push "$mb" "$(rate "$t_push_berth")" "$(rate "$t_push_skopeo")" "$(echo "scale=2; $t_push_skopeo/$t_push_berth" | bc)"
printf '%-6s %8s %10s %10s %8s\n' pull "$mb" "$(rate "$t_pull_berth")" "$(rate "$t_pull_skopeo")" "$(echo "scale=2; $t_pull_skopeo/$t_pull_berth" | bc)"
echo "(ratio = skopeo time / berth time; > 1 means berth is faster)"
