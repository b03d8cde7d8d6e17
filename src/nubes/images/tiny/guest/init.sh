#!/bin/sh
# Boot script of the nubes tiny guest (/etc/init.d/rcS). Busybox init (PID 1) runs it with
# "start" at boot and with "stop" at shutdown, in a VM (from the initrd) and in a system
# container (from the rootfs tarball) alike.
#
# What nubes relies on (tests and drivers parse these; keep them stable):
#   console   exactly one "NUBES-TINY-BOOTED hostname=<h> uptime=<seconds>" line (seconds since
#             the kernel booted; in a container since init started), then one
#             "NUBES-TINY-ADDR <ifname> <address/prefix>" line per IPv4 address of every NIC
#             ("none" when a NIC got no address) once DHCP has settled, and
#             "NUBES-TINY-SHUTDOWN" when init shuts down; each at the start of a line.
#   hostname  config drive (a device labelled config-2, ISO 9660 or VFAT; in a container the
#             seed directory /var/lib/cloud/seed/config_drive) > metadata service (only with a
#             DHCP lease, a default route or a link-local address) > kernel command line
#             nubes.hostname= (VMs) > the container's own (containers) > "tiny". It is the
#             top-level "hostname" of openstack/latest/meta_data.json.
#   services  HTTP on port 80 (busybox httpd): /index.html is the hostname and a newline;
#             TCP echo on port 7.
#   power     VM: ACPI power button -> acpid -> poweroff. Container: busybox init powers off
#             on SIGUSR2, reboots on SIGTERM, halts on SIGUSR1 and SIGPWR.

PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PATH
STATE=/run/tiny
CONFIG_MOUNT=/mnt/config
SEED_DIR=/var/lib/cloud/seed/config_drive
META_DATA=openstack/latest/meta_data.json
METADATA_URL=http://169.254.169.254/openstack/latest/meta_data.json

# Print a line on the console; also on the first serial port when that is not the console.
# Marker lines start with a newline of their own (say "" "MARKER ..."): whatever the firmware
# or a shell prompt left on the current line must not prefix them.
say() {
	printf '%s\n' "$@" >>/dev/console 2>/dev/null
	if [ -c /dev/ttyS0 ] && ! grep -qs ttyS0 /sys/class/tty/console/active; then
		printf '%s\n' "$@" >>/dev/ttyS0 2>/dev/null
	fi
}

in_container() {
	[ -n "$container" ] && return 0
	tr '\0' '\n' </proc/1/environ 2>/dev/null | grep -q '^container='
}

mounted() {
	grep -qs "^[^ ]* $1 " /proc/mounts
}

mount_once() { # type target options
	mounted "$2" && return 0
	mkdir -p "$2"
	mount -t "$1" -o "$3" "$1" "$2" 2>/dev/null
}

mount_filesystems() {
	[ -e /proc/self ] || mount -t proc -o nosuid,nodev,noexec proc /proc
	mount_once sysfs /sys nosuid,nodev,noexec
	mount_once devtmpfs /dev mode=0755,nosuid
	mount_once devpts /dev/pts mode=0620,gid=5,nosuid,noexec
	mount_once tmpfs /run mode=0755,nosuid,nodev
	mount_once tmpfs /tmp mode=1777,nosuid,nodev
	mkdir -p "$STATE" /var/log
}

load_modules() {
	[ -s /etc/tiny/modules ] || return 0
	kernel=$(uname -r)
	while read -r module; do
		insmod "/lib/modules/$kernel/$module" 2>/dev/null
	done </etc/tiny/modules
}

nics() {
	for path in /sys/class/net/*; do
		name=${path##*/}
		case $name in eth* | ens* | enp*) echo "$name" ;; esac
	done
}

# DHCP on every NIC that has no IPv4 address yet (LXC may have configured one), in parallel,
# in the background; $STATE/network-settled appears when every attempt has ended. udhcpc
# does not ask for classless static routes (option 121) by itself, and servers send only
# what is asked for: without -O staticroutes the metadata service's route never arrives.
start_network() {
	ip link set lo up 2>/dev/null
	(
		for nic in $(nics); do
			ip link set "$nic" up 2>/dev/null
			ip -4 addr show dev "$nic" | grep -q ' inet ' && continue
			udhcpc -i "$nic" -n -q -t 3 -T 2 -O staticroutes -s /etc/udhcpc/default.script \
				>/dev/null 2>&1 </dev/null &
		done
		wait
		: >"$STATE/network-settled"
	) &
}

wait_network() {
	tries=200 # 20 s; udhcpc gives up after about 6 s
	while [ ! -e "$STATE/network-settled" ] && [ "$tries" -gt 0 ]; do
		sleep 0.1
		tries=$((tries - 1))
	done
}

clean_hostname() {
	tr -cd 'A-Za-z0-9.-' | cut -c 1-64
}

# The top-level "hostname" of a JSON document, without a JSON parser: a scanner that follows
# strings and nesting, so neither spacing, key order nor a "hostname" key in the user's "meta"
# can mislead it.
json_hostname() {
	awk '
		{ doc = doc $0 "\n" }
		END {
			n = length(doc)
			for (i = 1; i <= n; i++) {
				c = substr(doc, i, 1)
				if (c == "\"") {
					s = ""
					for (i++; i <= n; i++) {
						c = substr(doc, i, 1)
						if (c == "\\") { i++; s = s substr(doc, i, 1); continue }
						if (c == "\"") break
						s = s c
					}
					if (depth == 1 && value && key == "hostname") { print s; exit }
					if (depth == 1 && !value) key = s
					value = 0
				} else if (c == ":") value = 1
				else if (c == ",") value = 0
				else if (c == "{" || c == "[") depth++
				else if (c == "}" || c == "]") depth--
			}
		}' | head -n 1 | clean_hostname
}

hostname_from_seed() {
	[ -r "$SEED_DIR/$META_DATA" ] && json_hostname <"$SEED_DIR/$META_DATA"
}

hostname_from_config_drive() { # attempts (block devices may still be appearing)
	attempts=$1
	until device=$(findfs LABEL=config-2 2>/dev/null); do
		attempts=$((attempts - 1))
		[ "$attempts" -gt 0 ] || return 0
		sleep 0.1
	done
	mkdir -p "$CONFIG_MOUNT"
	mount -t iso9660 -o ro "$device" "$CONFIG_MOUNT" 2>/dev/null ||
		mount -t vfat -o ro "$device" "$CONFIG_MOUNT" 2>/dev/null || return 0
	[ -r "$CONFIG_MOUNT/$META_DATA" ] && json_hostname <"$CONFIG_MOUNT/$META_DATA"
	umount "$CONFIG_MOUNT" 2>/dev/null
}

# Whether 169.254.169.254 may answer: a DHCP lease (its route may have come as option 121),
# a default route, or a link-local address of our own.
metadata_reachable() {
	ls "$STATE"/lease.* >/dev/null 2>&1 && return 0
	[ -n "$(ip -4 route show default 2>/dev/null)" ] && return 0
	ip -4 addr show 2>/dev/null | grep -q ' inet 169\.254\.'
}

hostname_from_metadata() {
	metadata_reachable || return 0
	# timeout(1), not wget -T: busybox 1.35's wget crashes (SIGSEGV) when given -T.
	timeout 3 wget -q -O - "$METADATA_URL" 2>/dev/null | json_hostname
}

hostname_from_cmdline() {
	for word in $(cat /proc/cmdline); do
		case $word in nubes.hostname=*)
			printf '%s' "${word#nubes.hostname=}" | clean_hostname
			return
			;;
		esac
	done
}

hostname_of_container() {
	name=$(hostname)
	case $name in '' | '(none)' | localhost | localhost.localdomain) ;; *) printf '%s' "$name" ;; esac
}

choose_hostname() { # vm|container
	attempts=1
	# virtio-blk disks exist once their module is loaded; SCSI buses are scanned
	# asynchronously, so give a CD-ROM config drive two seconds to appear.
	[ "$1" = vm ] && ls -d /sys/class/scsi_host/host* >/dev/null 2>&1 && attempts=20
	name=$(hostname_from_seed)
	[ -z "$name" ] && name=$(hostname_from_config_drive "$attempts")
	if [ -z "$name" ]; then
		wait_network
		name=$(hostname_from_metadata)
	fi
	[ -z "$name" ] && [ "$1" = vm ] && name=$(hostname_from_cmdline)
	[ -z "$name" ] && [ "$1" = container ] && name=$(hostname_of_container)
	printf '%s' "${name:-tiny}"
}

set_hostname() {
	hostname "$1"
	echo "$1" >/etc/hostname
	printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$1" >/etc/hosts
}

start_services() { # hostname
	printf '%s\n' "$1" >/www/index.html
	httpd -p 80 -h /www
	nc -ll -p 7 -e /bin/cat </dev/null >/dev/null 2>&1 &
}

report_addresses() {
	wait_network
	for nic in $(nics); do
		addresses=$(ip -4 addr show dev "$nic" | sed -n 's/.*inet \([0-9.]*\/[0-9]*\).*/\1/p')
		for address in ${addresses:-none}; do
			say "NUBES-TINY-ADDR $nic $address"
		done
	done
}

# Seconds since the kernel booted (VM), or since init started (container: /proc/uptime is
# the host's there). USER_HZ, the unit of /proc/1/stat's start time, is 100 on Linux.
uptime_of() { # vm|container
	read -r uptime _ </proc/uptime
	if [ "$1" = container ]; then
		awk -v now="$uptime" '{ printf "%.2f\n", now - $22 / 100 }' /proc/1/stat
	else
		echo "$uptime"
	fi
}

start() {
	mount_filesystems
	guest=vm
	in_container && guest=container
	if [ "$guest" = vm ]; then
		load_modules
		acpid -l /var/log/acpid.log
	fi
	start_network
	name=$(choose_hostname "$guest")
	set_hostname "$name"
	start_services "$name"
	say "" "NUBES-TINY-BOOTED hostname=$name uptime=$(uptime_of "$guest")"
	report_addresses # before init starts the console shell, so no prompt interleaves
}

# The console shell (inittab askfirst). cttyhack finds the serial port behind /dev/console
# and makes it the controlling tty (job control, ^C); a container's sysfs shows the host's
# console, so there the shell keeps the console init gave it.
shell() {
	if in_container; then
		exec /bin/sh -l
	fi
	exec /bin/cttyhack /bin/sh -l
}

stop() {
	say "" "NUBES-TINY-SHUTDOWN"
	umount "$CONFIG_MOUNT" 2>/dev/null
	sync
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
shell) shell ;;
*)
	echo "usage: $0 start|stop|shell" >&2
	exit 2
	;;
esac
exit 0
