#!/bin/sh
# install-bundle.sh ROOT RELEASE SOURCE: install the Derrick release bundle under ROOT, offline,
# with the appliance's /bin/sh only (Ansible's `script` module runs it: no Python needed).
#   SOURCE = a release tarball already on the appliance (python/ = relocatable CPython 3.11,
#            app/ = the agent and its wheels installed into it, libexec/ = the appliance-side
#            switch tool; see docs/fleet.md), or
#            dev:PYTHON:APPDIR for tests (this repository and its virtualenv's python).
# Stages in releases/RELEASE.partial, writes .complete last, renames, then swaps the
# `current` symlink atomically (relative target). Installing the same release again is a no-op.
set -eu
root=$1 release=$2 source=$3
base="$root/opt/derrick"
dest="$base/releases/$release"
if [ -f "$dest/.complete" ]; then echo "derrick bundle $release: present"; exit 0; fi
tmp="$dest.partial"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
case "$source" in
    dev:*)
        rest=${source#dev:}
        python=${rest%%:*}
        app=${rest#*:}
        mkdir -p "$tmp/libexec"
        cp "$app/roles/derrick_switch/files/derrick_switch.py" \
            "$app/ansible/module_utils/derrick_legacy.py" "$tmp/libexec/"
        chmod 0755 "$tmp/libexec/derrick_switch.py"
        ;;
    *)
        tar -xzf "$source" -C "$tmp"
        python="$dest/python/bin/python3"
        app="$dest/app"
        ;;
esac
cat >"$tmp/bin/python3" <<WRAP
#!/bin/sh
PYTHONPATH="$app\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python" "\$@"
WRAP
cat >"$tmp/bin/derrick-edge" <<WRAP
#!/bin/sh
exec "$dest/bin/python3" -m edge "\$@"
WRAP
chmod 0755 "$tmp/bin/python3" "$tmp/bin/derrick-edge"
"$tmp/bin/python3" -c 'import sys; assert sys.version_info >= (3, 11)'
test -f "$tmp/libexec/derrick_switch.py" && test -f "$tmp/libexec/derrick_legacy.py"
touch "$tmp/.complete"
mv "$tmp" "$dest"
ln -sfn "releases/$release" "$base/current.new"
mv -T "$base/current.new" "$base/current"
# The switch tool of the current release, at the path the roles and the watchdog use.
if [ ! -L "$base/libexec" ]; then
    rm -rf "$base/libexec"
    ln -s current/libexec "$base/libexec"
fi
echo "derrick bundle $release: installed"
