#!/bin/sh
# udhcpc event script of the nubes tiny guest: address, default route, static routes (option
# 121, which may carry the metadata service's route) and DNS. Records each lease in
# /run/tiny/lease.<interface>, which tells the boot script a metadata service may answer.
STATE=/run/tiny

case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set dev "$interface" up
	rm -f "$STATE/lease.$interface"
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	if [ -n "$router" ]; then
		while ip route del default dev "$interface" 2>/dev/null; do :; done
		for gateway in $router; do
			ip route add default via "$gateway" dev "$interface" && break
		done
	fi
	if [ -n "$staticroutes" ]; then
		# shellcheck disable=SC2086 # pairs of "network/prefix gateway"
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			ip route replace "$1" via "$2" dev "$interface" 2>/dev/null
			shift 2
		done
	fi
	if [ -n "$dns" ]; then
		{
			[ -n "$domain" ] && echo "search $domain"
			for server in $dns; do echo "nameserver $server"; done
		} >/etc/resolv.conf
	fi
	mkdir -p "$STATE"
	echo "$ip/${mask:-24}" >"$STATE/lease.$interface"
	;;
esac
exit 0
