#!/usr/bin/env bash
# Build the `colony:local` Docker image from a Colony binary built on this
# host, without pulling anything: the image is FROM scratch plus the binary
# and exactly the shared libraries it links.
#
# Usage: deploy/docker/build-image.sh [BINARY]
#   BINARY defaults to target/release/colony, built with
#   `cargo build --release -p colony-server` if it does not exist yet.
# Environment: IMAGE (default colony:local) names the image.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${IMAGE:-colony:local}
binary=${1:-$repo/target/release/colony}

if [[ ! -e $binary ]]; then
    if [[ $# -gt 0 ]]; then
        echo "build-image.sh: $binary does not exist" >&2
        exit 1
    fi
    echo "build-image.sh: $binary is missing; building it" >&2
    (cd "$repo" && cargo build --release -p colony-server)
fi
binary=$(readlink -f "$binary")

ctx=$(mktemp -d "${TMPDIR:-/tmp}/colony-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs

# Copy a file to the same path under the image root, following symlinks so
# that the image holds the file's contents under the name the binary asks for.
add() {
    local src=$1 dst=${2:-$1}
    mkdir -p "$root$(dirname "$dst")"
    cp -L "$src" "$root$dst"
}

add "$binary" /usr/local/bin/colony

# Every library the binary links, and the dynamic loader. ldd prints
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" for libraries and
# "/lib64/ld-linux-x86-64.so.2 (0x...)" for the loader; the vDSO has no file.
libs=()
while read -r line; do
    case $line in
        *"=> not found"*)
            echo "build-image.sh: $line" >&2
            exit 1 ;;
        *"=> /"*) path=${line#*=> }; libs+=("${path%% (*}") ;;
        /*) libs+=("${line%% (*}") ;;
    esac
done < <(ldd "$binary")
if [[ ${#libs[@]} -eq 0 ]]; then
    echo "build-image.sh: ldd found no libraries; is $binary a dynamic executable?" >&2
    exit 1
fi

libc_dir=
for lib in "${libs[@]}"; do
    add "$lib"
    case $lib in */libc.so.*) libc_dir=$(dirname "$lib") ;; esac
done

# Name lookups (--join node1:8099) go through glibc's NSS, which loads its
# modules at run time, so ldd does not list them. glibc 2.34 and later has
# files and dns inside libc itself; older ones need these files.
if [[ -n $libc_dir ]]; then
    for mod in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
        if [[ -e $libc_dir/$mod ]]; then
            add "$libc_dir/$mod"
        fi
    done
fi
mkdir -p "$root/etc"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
# The data directory, for a container run without a volume on it.
mkdir -p "$root/data"

cp "$here/Dockerfile" "$ctx/Dockerfile"
echo "build-image.sh: image contents:" >&2
(cd "$root" && find . -type f | sort) >&2
docker build -t "$image" "$ctx"
echo "build-image.sh: built $image from $binary" >&2
