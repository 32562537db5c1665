#!/usr/bin/env bash
# Assembles the root filesystem of the nightcap image: rootfs.sh BINARY DEST
#
# The one definition of what the image holds; the Containerfile's runtime stage and build.sh both
# run it, so the two images carry the same files at the same paths:
#   /usr/bin/nightcap                      BINARY, stripped (a copy; BINARY is left alone)
#   the dynamic loader and every library   at the paths `ldd` resolves them to (real files)
#   /etc/ssl/certs/ca-certificates.crt     the CA bundle: S3 over HTTPS (reqwest through
#                                          rustls-platform-verifier) and NATS over TLS
#                                          (rustls-native-certs) read the system store
#   /etc/passwd, /etc/group                root (0) and nonroot (65532)
#   /tmp                                   empty, mode 1777
# No shell, no package manager, nothing else. DEST must not exist or be empty.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: rootfs.sh BINARY DEST" >&2
  exit 2
fi
binary=$1
dest=$2
ca_bundle=${NIGHTCAP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

die() { echo "rootfs.sh: error: $*" >&2; exit 1; }
[ -f "$binary" ] || die "$binary is not a file"
[ -f "$ca_bundle" ] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates)"
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  die "$dest is not empty"
fi

mkdir -p "$dest/usr/bin" "$dest/etc/ssl/certs" "$dest/tmp"
chmod 0755 "$dest" "$dest/usr" "$dest/usr/bin" "$dest/etc" "$dest/etc/ssl" "$dest/etc/ssl/certs"
chmod 1777 "$dest/tmp"

strip --strip-all -o "$dest/usr/bin/nightcap" "$binary"
chmod 0755 "$dest/usr/bin/nightcap"

# `ldd` prints "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" for libraries and
# "/lib64/ld-linux-x86-64.so.2 (0x…)" for the loader (the binary's PT_INTERP); the vDSO has no
# path. Each is copied to the path printed, dereferenced, so no symlink can dangle.
mapfile -t libs < <(ldd "$dest/usr/bin/nightcap" | awk '
  $2 == "=>" && $3 ~ /^\// { print $3; next }
  $1 ~ /^\// { print $1 }')
[ "${#libs[@]}" -gt 0 ] || die "ldd lists no libraries for $binary; is it a dynamic ELF executable?"
for lib in "${libs[@]}"; do
  mkdir -p "$dest$(dirname "$lib")"
  cp --dereference "$lib" "$dest$lib"
  chmod 0755 "$dest$lib"
done

cp --dereference "$ca_bundle" "$dest/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$dest/etc/ssl/certs/ca-certificates.crt"

# The capture Job runs as uid 0 (its own securityContext); every component else as 65532.
cat > "$dest/etc/passwd" <<'EOF'
root:x:0:0:root:/:/sbin/nologin
nonroot:x:65532:65532:nonroot:/:/sbin/nologin
EOF
cat > "$dest/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
chmod 0644 "$dest/etc/passwd" "$dest/etc/group"

# Every directory the loop above created, owned by root and not writable by others.
find "$dest" -type d ! -path "$dest/tmp" -exec chmod 0755 {} +
chown -R 0:0 "$dest"
# Fixed times (SOURCE_DATE_EPOCH, else 0): the same binary gives the same layer.
find "$dest" -exec touch --no-dereference --date="@${SOURCE_DATE_EPOCH:-0}" {} +
