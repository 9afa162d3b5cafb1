#!/usr/bin/env bash
# Builds librdkafka's rdkafka_performance tool from the librdkafka source that the rdkafka-sys
# crate ships on crates.io, into tools/build/ (gitignored). Nothing is added to Karst's
# Cargo.toml: a throwaway cargo project under a temp dir fetches the crate.
# Output: tools/build/librdkafka/examples/rdkafka_performance
set -euo pipefail
cd "$(dirname "$0")/../.."
RDKAFKA_SYS_VERSION="${RDKAFKA_SYS_VERSION:-4.10.0}"   # bundles librdkafka 2.12.1
out=tools/build/librdkafka
tool="$out/examples/rdkafka_performance"
if [[ -x "$tool" ]]; then echo "already built: $tool"; exit 0; fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
cat >"$tmp/Cargo.toml" <<TOML
[package]
name = "rdkafka-sys-fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
rdkafka-sys = "=$RDKAFKA_SYS_VERSION"
TOML
echo 'fn main() {}' >"$tmp/src/main.rs"
(cd "$tmp" && cargo fetch --quiet)
src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-"$RDKAFKA_SYS_VERSION"+*/librdkafka | head -n1)"
echo "librdkafka source: $src"
rm -rf "$out"
mkdir -p tools/build
cp -r "$src" "$out"
cd "$out"
chmod +x configure lds-gen.py 2>/dev/null || true
./configure --disable-ssl --disable-gssapi --disable-sasl --disable-curl --enable-static >../rdkafka-configure.txt 2>&1 \
    || { tail -30 ../rdkafka-configure.txt; exit 1; }
make -j"$(nproc)" libs >../rdkafka-make.txt 2>&1 || { tail -30 ../rdkafka-make.txt; exit 1; }
make -C examples rdkafka_performance >>../rdkafka-make.txt 2>&1 || { tail -30 ../rdkafka-make.txt; exit 1; }
echo "built: $PWD/examples/rdkafka_performance"
