# Sourced by parity.sh and footprint.sh: makes sure the cross target, QEMU and (when asked)
# the ARM binutils are there, installing them when missing. Never skips: a missing tool that
# cannot be installed stops the script with an error.

need_apt() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "$1 missing: installing Debian package $2" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: $1 is missing and this is not root; run: apt-get install -y $2" >&2
        exit 1
    fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; } >&2; then
        echo "error: apt-get could not install $2" >&2
        exit 1
    fi
    command -v "$1" >/dev/null 2>&1 || { echo "error: $2 installed but $1 still missing" >&2; exit 1; }
}

need_target() {
    if ! rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf; then
        echo "installing the thumbv7em-none-eabihf target" >&2
        rustup target add thumbv7em-none-eabihf >&2 || {
            echo "error: rustup could not add thumbv7em-none-eabihf" >&2
            exit 1
        }
    fi
}

need_target
need_apt qemu-system-arm qemu-system-arm
