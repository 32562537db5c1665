#!/usr/bin/env bash
# Builds the nightcap image as an OCI image layout, without a registry or a container engine,
# and checks that it starts. Runs as root (umoci keeps ownership; runc runs the checks).
#
#   build.sh [--binary PATH] [--tag TAG] [--out DIR] [--bundle DIR] [--no-size-check]
#            [--max-mib N] [--check-only]
#
#   --binary PATH    the nightcap binary to ship (default: `cargo build --release --locked -p
#                    nightcap`, a no-op when target/release/nightcap is up to date)
#   --tag TAG        the tag inside the layout (default: the binary's version, e.g. 0.1.0)
#   --out DIR        the OCI image layout (default: <cargo target dir>/image/oci); an existing
#                    layout keeps its other tags, TAG is replaced
#   --bundle DIR     also leave the image unpacked there as an OCI runtime bundle (config.json +
#                    rootfs/, `umoci unpack`); DIR must not exist or be empty
#   --no-size-check  do not enforce the size target (for debug binaries)
#   --max-mib N      the size target: uncompressed layer bytes (default 40 MiB)
#   --check-only     build nothing: check (start and size) the image TAG already in DIR
#
# The root filesystem comes from rootfs.sh, which the Containerfile's runtime stage runs too.
# Checks: the image's config (entrypoint, user, labels), `runc run` of the unpacked image with a
# read-only root as 65532 (`nightcap --version`, `nightcap crds`) and as 0 (the capture Job's
# user), and the size. Any failure exits non-zero with the reason.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

binary=""
tag=""
out=""
bundle=""
size_check=1
max_mib=40
check_only=0

die() { echo "build.sh: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --bundle) bundle=${2:?--bundle needs a directory}; shift 2 ;;
    --no-size-check) size_check=0; shift ;;
    --max-mib) max_mib=${2:?--max-mib needs a number}; shift 2 ;;
    --check-only) check_only=1; shift ;;
    -h|--help) usage ;;
    *) echo "build.sh: unknown argument $1" >&2; usage ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: umoci records file ownership and runc runs the checks"
for pair in umoci:umoci runc:runc jq:jq gzip:gzip strip:binutils ldd:libc-bin; do
  command -v "${pair%%:*}" >/dev/null || die "${pair%%:*} is not installed (apt-get install ${pair##*:})"
done
[[ $max_mib =~ ^[0-9]+$ ]] || die "--max-mib takes a whole number of MiB, not $max_mib"
if [ -n "$tag" ] && ! [[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  die "--tag $tag is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]*)"
fi

target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    jq -r .target_directory
}
[ -n "$out" ] || out="$(target_dir)/image/oci"

work=$(mktemp -d /tmp/nightcap-image.XXXXXX)
containers=()
cleanup() {
  for id in "${containers[@]}"; do runc delete --force "$id" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# ---- build ---------------------------------------------------------------------------------
if [ "$check_only" -eq 0 ]; then
  if [ -z "$binary" ]; then
    echo "== cargo build --release --locked -p nightcap"
    (cd "$repo" && cargo build --release --locked -p nightcap)
    binary="$(target_dir)/release/nightcap"
  fi
  [ -x "$binary" ] || die "$binary is not an executable file"
  version=$("$binary" --version | awk '{print $2}')
  [ -n "$version" ] || die "$binary --version printed no version"
  [ -n "$tag" ] || tag=$version
  revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)

  echo "== OCI layout $out, tag $tag"
  if [ -f "$out/index.json" ]; then
    if umoci ls --layout "$out" | grep -qxF "$tag"; then
      umoci rm --image "$out:$tag"
    fi
  elif [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
    die "$out exists and is not an OCI image layout; choose another --out"
  else
    mkdir -p "$(dirname "$out")"
    rmdir "$out" 2>/dev/null || true
    umoci init --layout "$out"
  fi
  umoci new --image "$out:$tag"
  # The blank image unpacked is an empty rootfs/; fill it and repack it into the one layer.
  # (umoci 0.4.7's `insert` writes a layer tar without its end blocks; repack writes it whole.)
  umoci unpack --image "$out:$tag" "$work/stage" >/dev/null
  echo "== root filesystem (rootfs.sh)"
  bash "$here/rootfs.sh" "$binary" "$work/stage/rootfs"
  umoci repack --image "$out:$tag" \
    --history.created_by "cli/image/rootfs.sh nightcap $version" "$work/stage"
  umoci config --image "$out:$tag" --no-history \
    --config.entrypoint /usr/bin/nightcap \
    --config.user 65532:65532 \
    --config.env PATH=/usr/bin \
    --config.label org.opencontainers.image.title=nightcap \
    --config.label "org.opencontainers.image.description=nightcap: event-driven packet captures for Kubernetes" \
    --config.label org.opencontainers.image.source=https://github.com/nightcap-dev/nightcap \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label org.opencontainers.image.licenses=Apache-2.0
  umoci gc --layout "$out"
else
  [ -z "$binary" ] || die "--check-only checks an existing image; --binary does not apply"
  [ -n "$tag" ] || die "--check-only needs --tag"
  [ -f "$out/index.json" ] || die "$out is not an OCI image layout"
fi

# ---- the image's config --------------------------------------------------------------------
blob() { echo "$out/blobs/sha256/${1#sha256:}"; }
manifest_digest=$(jq -r --arg t "$tag" \
  '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
  "$out/index.json")
[ "$(echo "$manifest_digest" | grep -c .)" -eq 1 ] || die "tag $tag names $(echo "$manifest_digest" | grep -c .) manifests in $out"
manifest=$(blob "$manifest_digest")
config=$(blob "$(jq -r .config.digest "$manifest")")
[ "$(jq -c .config.Entrypoint "$config")" = '["/usr/bin/nightcap"]' ] ||
  die "entrypoint is $(jq -c .config.Entrypoint "$config"), not [\"/usr/bin/nightcap\"]"
[ "$(jq -r .config.User "$config")" = 65532:65532 ] ||
  die "user is $(jq -r .config.User "$config"), not 65532:65532"
[ "$(jq '.layers | length' "$manifest")" -eq 1 ] ||
  die "the image has $(jq '.layers | length' "$manifest") layers, expected 1"

# ---- start it ------------------------------------------------------------------------------
if [ -n "$bundle" ]; then
  if [ -f "$bundle/umoci.json" ]; then
    rm -rf "$bundle"                          # a bundle an earlier run left
  elif [ -e "$bundle" ] && [ -n "$(ls -A "$bundle")" ]; then
    die "--bundle $bundle exists and is not empty"
  fi
  rmdir "$bundle" 2>/dev/null || true
else
  bundle="$work/bundle"
fi
echo "== umoci unpack into $bundle"
umoci unpack --image "$out:$tag" "$bundle" >/dev/null
rootfs=$(cd "$bundle/rootfs" && pwd)

# run USER ARG...: runc run the unpacked image with a read-only root as USER (uid:gid), with
# its own config.json next to the bundle, so the bundle itself stays as umoci made it.
n=0
run() {
  local user=$1; shift
  n=$((n + 1))
  local dir="$work/check-$n" id="nightcap-image-check-$$-$n"
  mkdir -p "$dir"
  local args
  args=$(printf '%s\n' /usr/bin/nightcap "$@" | jq -R . | jq -s -c .)
  jq --arg root "$rootfs" --argjson args "$args" \
     --argjson uid "${user%%:*}" --argjson gid "${user##*:}" \
     '.root = {path: $root, readonly: true}
       | .process.args = $args
       | .process.terminal = false
       | .process.user.uid = $uid | .process.user.gid = $gid' \
     < "$bundle/config.json" > "$dir/config.json"
  containers+=("$id")
  if ! runc run --bundle "$dir" "$id" > "$dir/stdout" 2> "$dir/stderr" < /dev/null; then
    cat "$dir/stderr" >&2
    die "runc run of the image as $user with 'nightcap $*' failed"
  fi
  cat "$dir/stdout"
}

[ "$(jq -r .process.user.uid "$bundle/config.json"):$(jq -r .process.user.gid "$bundle/config.json")" = 65532:65532 ] ||
  die "the unpacked bundle does not run as 65532:65532"
expected_version=$(jq -r '.config.Labels["org.opencontainers.image.version"]' "$config")
echo "== runc run (read-only root): nightcap --version as 65532, as 0; nightcap crds"
got=$(run 65532:65532 --version)
[ "$got" = "nightcap $expected_version" ] ||
  die "nightcap --version in the image printed '$got', expected 'nightcap $expected_version'"
got_root=$(run 0:0 --version)
[ "$got_root" = "$got" ] || die "as uid 0 the image printed '$got_root', expected '$got'"
crds=$(run 65532:65532 crds)
grep -q '^kind: CustomResourceDefinition' <<<"$crds" ||
  die "nightcap crds in the image printed no CustomResourceDefinition"
grep -q 'name: packetcaptures.nightcap.dev' <<<"$crds" ||
  die "nightcap crds in the image printed no packetcaptures.nightcap.dev"
echo "$got: starts (read-only root, as 65532 and as 0)"

# runc made the mount points /proc, /dev, /sys; the bundle stays as umoci unpacked it.
for dir in proc dev sys; do rmdir "$rootfs/$dir" 2>/dev/null || true; done

# ---- size ----------------------------------------------------------------------------------
layer=$(blob "$(jq -r '.layers[0].digest' "$manifest")")
gzip -dc "$layer" | tar -t >/dev/null || die "the layer $layer is not a complete tar archive"
compressed=$(stat -c %s "$layer")
uncompressed=$(gzip -dc "$layer" | wc -c)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
binary_bytes=$(stat -c %s "$rootfs/usr/bin/nightcap")
lib_bytes=$(find "$rootfs" -name '*.so*' -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
echo "== size"
echo "image:        oci:$out:$tag"
echo "manifest:     $manifest_digest"
echo "uncompressed: $uncompressed bytes ($(mib "$uncompressed")), layer tar"
echo "rootfs (du):  $(du -sb --apparent-size "$rootfs" | cut -f1) bytes"
echo "compressed:   $compressed bytes ($(mib "$compressed")), gzip"
echo "binary:       $binary_bytes bytes ($(mib "$binary_bytes")), /usr/bin/nightcap stripped"
echo "libraries:    $lib_bytes bytes ($(mib "$lib_bytes")): $(cd "$rootfs" && find . -name '*.so*' -type f -printf '%P ' )"
if [ "$size_check" -eq 1 ]; then
  limit=$((max_mib * 1024 * 1024))
  if [ "$uncompressed" -gt "$limit" ]; then
    die "the image is $(mib "$uncompressed") uncompressed, over the $max_mib MiB target. \
The binary is $(mib "$binary_bytes"); see where it goes with 'size -A' on it (docs/BENCHMARKS.md, Image)."
  fi
  echo "size target:  ≤ $max_mib MiB uncompressed: met"
fi
echo "oci:$out:$tag"
