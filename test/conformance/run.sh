#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite against berth's embedded
# registry (internal/registry/server) on loopback and prints the counts.
#
#   test/conformance/run.sh            # build both, serve on a free port, run
#   KEEP=1 test/conformance/run.sh     # keep the work dir (results/report.html)
#
# The suite is a Go module fetched once through the module proxy
# (go mod download) and then built from the module cache, so later runs work
# offline. Extra OCI_* variables in the environment are passed through, e.g.
# OCI_DATA_SHA512=false to leave out sha512 content.
set -euo pipefail

CONFORMANCE_MODULE=github.com/opencontainers/distribution-spec/conformance
CONFORMANCE_VERSION=${CONFORMANCE_VERSION:-v0.0.0-20260831232431-97274622c111}

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/berth-conformance.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "work dir: $work"; fi
}
trap cleanup EXIT

echo "== fetching $CONFORMANCE_MODULE@$CONFORMANCE_VERSION (module cache)"
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$CONFORMANCE_MODULE@$CONFORMANCE_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "conformance module not found in the module cache" >&2; exit 1; }

echo "== building the suite (go test -c) and the server"
(cd "$dir" && GOWORK=off GOFLAGS=-mod=mod nice go test -c -o "$work/conformance.test" .)
(cd "$repo" && nice go build -o "$work/registryd" ./test/conformance/registryd)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 5055)
"$work/registryd" -addr "127.0.0.1:$port" -root "$work/root" >"$work/registryd.log" 2>&1 &
pid=$!
for _ in $(seq 50); do
	curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
	sleep 0.1
done

echo "== running against http://127.0.0.1:$port"
mkdir -p "$work/results"
set +e
(cd "$work" &&
	OCI_ROOT_URL="http://127.0.0.1:$port" \
	OCI_NAMESPACE=conformance/repo1 \
	OCI_CROSSMOUNT_NAMESPACE=conformance/repo2 \
	OCI_TEST_PULL=1 OCI_TEST_PUSH=1 \
	OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1 \
	OCI_RESULTS_DIR="$work/results" \
	./conformance.test >"$work/output.txt" 2>&1)
rc=$?
set -e
sed -n '/conformance:/,$p' "$work/output.txt" | grep -v '^WARNING: "go test"' || tail -40 "$work/output.txt"

junit="$work/results/junit.xml"
if [ -f "$junit" ]; then
	attr() { head -1 "$junit" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]*' || echo 0; }
	tests=$(attr tests) failures=$(attr failures) skipped=$(attr skipped) disabled=$(attr disabled)
	echo "== result: $((tests - failures - skipped - disabled)) passed, $failures failed, $skipped skipped, $disabled disabled (of $tests)"
	if [ "$failures" != 0 ]; then
		echo "== failing tests:"
		grep -o '<testcase name="[^"]*"[^>]*status="failure"' "$junit" | sed 's/<testcase name="OCI Conformance Test\/\([^"]*\)".*/  \1/' | sort | uniq -c
	fi
fi
exit $rc
