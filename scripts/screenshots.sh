#!/usr/bin/env bash
# Regenerates the README's screenshots (screenshots/*.png) from a session, in a real window under Xvfb with
# software OpenGL: the app shows each tab, captures its own viewport and closes.
#   scripts/screenshots.sh [SESSION]        (default: sessions/demo.json)
set -euo pipefail
cd "$(dirname "$0")/.."
session="${1:-sessions/demo.json}"
if ! command -v xvfb-run >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb libgl1-mesa-dri libegl1 libgl1 xauth
    else
        echo "needs xvfb-run and Mesa's software OpenGL: apt-get install xvfb libgl1-mesa-dri libegl1 xauth" >&2
        exit 1
    fi
fi
cargo build --release
mkdir -p screenshots
xvfb-run -a -s "-screen 0 1600x1000x24" target/release/edgescope --session "$session" --screenshots screenshots
ls -l screenshots
