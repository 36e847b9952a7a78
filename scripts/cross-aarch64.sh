#!/usr/bin/env bash
# Cross-builds the lean device runner for 64-bit ARM (Raspberry Pi 5 on a 64-bit OS, Jetson with JetPack 5/6)
# and, with --check, proves it works: runs it under qemu-user with the aarch64 libonnxruntime from the PyPI
# wheel and sends it a real job from this machine's x86 client.
#   scripts/cross-aarch64.sh            build target/aarch64-unknown-linux-gnu/release/edgescope-runner
#   scripts/cross-aarch64.sh --check    build, then evaluate two fixture variants through the emulated runner
# Copy the binary and libonnxruntime.so.1.31.1 (beside it) to the device; on a Jetson point ORT_DYLIB_PATH
# at JetPack's onnxruntime-gpu library to get CUDA/TensorRT.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

if ! command -v aarch64-linux-gnu-gcc >/dev/null || { [ "${1:-}" = --check ] && ! command -v qemu-aarch64 >/dev/null; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user
    else
        echo "needs the aarch64 cross compiler and qemu-user: apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user" >&2
        exit 1
    fi
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo build --release --no-default-features --target "$target" --bin edgescope-runner
out="target/$target/release"
file "$out/edgescope-runner" 2>/dev/null || true
ls -l "$out/edgescope-runner" "$out"/libonnxruntime.so.* 

[ "${1:-}" = --check ] || exit 0

work=$(mktemp -d)
trap 'kill "${runner_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# ONNX Runtime's cpuinfo reads the host's x86 /proc/cpuinfo and /sys/devices/system/cpu under qemu-user and
# crashes; a private mount namespace shows it a 4-core Cortex-A76 (Raspberry Pi 5) instead.
fake="$work/fake-arm64"
mkdir -p "$fake/cpu"
for f in possible present online; do echo 0-3 > "$fake/cpu/$f"; done
for c in 0 1 2 3; do
    mkdir -p "$fake/cpu/cpu$c/topology" "$fake/cpu/cpu$c/cpufreq"
    echo 0 > "$fake/cpu/cpu$c/topology/physical_package_id"; echo "$c" > "$fake/cpu/cpu$c/topology/core_id"
    echo 0-3 > "$fake/cpu/cpu$c/topology/core_siblings_list"; echo "$c" > "$fake/cpu/cpu$c/topology/thread_siblings_list"
    echo 2400000 > "$fake/cpu/cpu$c/cpufreq/cpuinfo_max_freq"; echo 2400000 > "$fake/cpu/cpu$c/cpufreq/scaling_cur_freq"
done
for c in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$c"
done > "$fake/cpuinfo"
printf 'Hardware\t: BCM2712\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n' >> "$fake/cpuinfo"

unshare -m bash -c "mount --bind '$fake/cpu' /sys/devices/system/cpu && mount --bind '$fake/cpuinfo' /proc/cpuinfo && \
    ORT_DYLIB_PATH='$PWD/$out/libonnxruntime.so.1.31.1' exec qemu-aarch64 -L /usr/aarch64-linux-gnu \
    '$out/edgescope-runner' --listen 127.0.0.1:$port --token-file '$work/token' --cache-dir '$work/cache'" &
runner_pid=$!
cargo build --release --bin edgescope
for _ in $(seq 1 240); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.5
done
target/release/edgescope devices --config "$work/devices.toml" --add emulated-arm64 "tcp://127.0.0.1:$port" --token-file "$work/token"
target/release/edgescope eval --device "tcp://127.0.0.1:$port" --token-file "$work/token" --limit 100 --warmup 2 \
    --dataset tests/fixtures/fmnist500 --variant tests/fixtures/tiny_base.toml tests/fixtures/tiny_ee.toml \
    --out "$work/arm64.json"
target/release/edgescope report "$work/arm64.json" --format md
