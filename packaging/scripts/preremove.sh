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
# The Docker engine restores the router's allow-list with this binary
# before it starts: once the binary is gone that would keep the engine from
# starting, so the drop-in goes with it (the rules stay until a reboot).
dropin=/etc/systemd/system/docker.service.d/carto-firewall.conf
if [ -e "$dropin" ] && grep -q '/usr/bin/carto-appliance' "$dropin"; then
	rm -f "$dropin" "$dropin.prev"
	systemctl daemon-reload 2>/dev/null || true
fi
exit 0
