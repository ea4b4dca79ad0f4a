#!/bin/sh
# Before the package's files go: stop and remove the agent's unit, which
# runs this binary. The stack and its data stay (`carto-appliance uninstall
# [--purge]` removes them). Upgrades keep the agent (deb: "upgrade", rpm: 1).
set -e
case "$1" in
upgrade | 1) exit 0 ;;
esac
if [ -x /usr/bin/carto-appliance ] && [ -e /etc/systemd/system/carto-appliance.service ] &&
	grep -q '/usr/bin/carto-appliance' /etc/systemd/system/carto-appliance.service; then
	/usr/bin/carto-appliance service uninstall || true
fi
exit 0
