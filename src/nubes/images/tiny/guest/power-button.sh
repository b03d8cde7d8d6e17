#!/bin/sh
# Busybox acpid runs /etc/acpi/PWRF/00000080 when the ACPI power button is pressed (QMP
# system_powerdown): power off cleanly through busybox init.
exec poweroff
