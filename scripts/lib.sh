# Shared by scripts/quickstart and scripts/test: a Python 3.11+ virtualenv in .venv and the
# Debian packages that mailer's tests need. Sourced, not run.

need_python() {
  PYTHON=${PYTHON:-python3}
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "mailer needs Python 3.11 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
  fi
}

PIP_VERSION=26.3   # the installer is pinned like everything it installs
UV_VERSION=0.13.9  # only scripts/lock uses it

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  # Install the Debian packages that are missing; `apt-get update` only when needed.
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  need_python
  if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      apt_install python3-venv
      "$PYTHON" -m venv .venv
    fi
    .venv/bin/python -m pip install -q "pip==$PIP_VERSION"
  fi
}

install_locked() {
  # Exactly the versions in requirements.txt (hashes checked), then mailer itself from
  # this folder, built with the locked setuptools.
  .venv/bin/pip install -q --require-hashes --no-deps -r requirements.txt
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
}
