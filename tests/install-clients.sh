#!/bin/sh
# Install the published clients that test stands run today (hgcroc-configuration-client,
# datenraffinerie 1.0.15 and 0.1.2) into the virtual environment VENV (default .venv), for
# tests/test_real_clients.py. They are installed without their own requirement lists, which
# pin far more than their control code imports; see tests/clients.txt.
set -eu
venv="${1:-.venv}"
here="$(dirname "$0")"
"$venv/bin/pip" install -q --no-deps -r "$here/clients.txt"
"$venv/bin/pip" install -q --no-deps --upgrade --target "$venv/datenraffinerie-0.1.2" datenraffinerie==0.1.2
