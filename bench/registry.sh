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

# Whole commands, as a user runs them: `berth push` from berth's store and
# `berth pull` into a fresh store against `skopeo copy` to and from an OCI
# layout. ROUNDS alternating rounds, each against fresh registries (so no
# blob is already there), medians reported.
BERTH=${BERTH:-$repo/bin/berth}
(cd "$work/src" && tar -cf "$work/src.tar" .)
export BERTH_CONFIG=/nonexistent
bt() { BERTH_ROOT="$work/broot-$1" BERTH_STATE="$work/bstate-$1" "$BERTH" "${@:2}"; }
bt push load -q -i "$work/src.tar" >/dev/null
rounds=${ROUNDS:-3}
: >"$work/times"
for r in $(seq "$rounds"); do
	start_registry "b$r" rb
	start_registry "s$r" rs
	bt push tag "$(bt push images -q | head -n1)" "$rb/bench/img:1"
	echo "push_berth $(secs bt push push -q "$rb/bench/img:1")" >>"$work/times"
	echo "push_skopeo $(secs sk --dest-tls-verify=false "oci:$work/src:img" "docker://$rs/bench/img:1")" >>"$work/times"
	echo "pull_berth $(secs bt "pull$r" pull -q "$rb/bench/img:1")" >>"$work/times"
	echo "pull_skopeo $(secs sk --src-tls-verify=false "docker://$rs/bench/img:1" "oci:$work/dst-skopeo-$r:img")" >>"$work/times"
	echo "repull_berth $(secs bt "pull$r" pull -q "$rb/bench/img:1")" >>"$work/times"
	rm -rf "$work/broot-pull$r" "$work/bstate-pull$r" "$work/dst-skopeo-$r"
done
med() { awk -v k="$1" '$1==k {print $2}' "$work/times" | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
rate() { echo "scale=1; $mb/$1" | bc; }
echo "$rounds rounds, medians of whole commands"
printf '%-6s %8s %10s %10s %8s\n' op MB berth_MB/s skopeo_MB/s ratio
for op in push pull; do
	b=$(med "${op}_berth") s=$(med "${op}_skopeo")
	printf '%-6s %8s %10s %10s %8s\n' "$op" "$mb" "$(rate "$b")" "$(rate "$s")" "$(echo "scale=2; $s/$b" | bc)"
done
echo "(ratio = skopeo time / berth time; > 1 means berth is faster)"
echo "second pull of an unchanged image (whole berth pull command): $(echo "scale=1; $(med repull_berth)*1000/1" | bc) ms"
