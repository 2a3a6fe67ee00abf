# Sourced by install.sh and test.sh: installs Debian packages and the Python
# virtual environment the project needs, on a machine that has none of it.
# Packages whose services Debian would start at install (postgresql) are
# installed with service start-up disabled: the tests start private instances.

VENV=${VMDKOPS_VENV:-$PWD/.venv}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "Installing Debian packages: ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d created_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
    [ -n "$created_policy" ] && rm -f "$policy"
    return $rc
}

python_venv() {
    # $1: what to install into the venv (a pip requirement such as ".[test]").
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    # A regular (not editable) install: the tests run what users get.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$1"
}
