#!/bin/sh
# systemctl for the package tests' private root (tests/src/private_root.rs),
# installed there as /usr/bin/systemctl. PID 1 of the test machines is not
# systemd, so this plays systemd's part for one kind of unit, the way
# systemd runs lb.service: Environment= is exported, ExecStartPre= must
# succeed, ExecStart= runs with a NOTIFY_SOCKET and counts as started at
# READY=1 (Type=notify; TimeoutStartSec 60 s), stop sends SIGTERM to the
# main process only (KillMode=process) and waits 90 s before SIGKILL. The
# commands run in the network namespace named in $STATE/netns; their output
# goes to $STATE/<unit>.log (the journal). Options such as --system and
# --quiet are accepted and ignored. Anything else is refused, so a
# maintainer script that needs more fails loudly.
set -u
STATE=/run/systemd/lb-test

if [ "${1:-}" = "--version" ]; then
	echo "systemd 252 (lb tests' stand-in)"
	exit 0
fi
while [ $# -gt 0 ]; do
	case "$1" in
	--) shift; break ;;
	-*) shift ;;
	*) break ;;
	esac
done
action=${1:-}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift

journal() { echo "systemctl: $*" >>"$STATE/${unit:-systemd}.log"; }

unit_file() {
	for d in /etc/systemd/system /lib/systemd/system; do
		if [ -f "$d/$1" ]; then
			echo "$d/$1"
			return 0
		fi
	done
	return 1
}

alive() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]
}

main_pid() {
	p=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
	alive "$p" && echo "$p"
}

start() {
	f=$(unit_file "$unit") || { echo "Unit $unit not found." >&2; return 5; }
	main_pid "$unit" >/dev/null && return 0
	for e in $(sed -n 's/^Environment=//p' "$f"); do export "$e"; done
	ns=$(cat "$STATE/netns")
	pre=$(sed -n 's/^ExecStartPre=//p' "$f")
	cmd=$(sed -n 's/^ExecStart=//p' "$f")
	if [ -n "$pre" ]; then
		journal "ExecStartPre: $pre"
		if ! eval "ip netns exec $ns $pre" >>"$STATE/$unit.log" 2>&1 </dev/null; then
			journal "ExecStartPre failed"
			echo "Job for $unit failed (ExecStartPre)." >&2
			return 1
		fi
	fi
	sock="$STATE/$unit.notify"
	rm -f "$sock" "$sock.log"
	socat -u "UNIX-RECV:$sock" "OPEN:$sock.log,creat,append" </dev/null >/dev/null 2>&1 &
	echo $! >"$STATE/$unit.socat"
	i=0
	while [ ! -S "$sock" ]; do
		i=$((i + 1))
		[ $i -gt 200 ] && { echo "no notify socket" >&2; return 1; }
		sleep 0.05
	done
	journal "ExecStart: $cmd"
	# ${VAR} expanded as systemd does; then a simple command in the
	# background: the shell's child execs setsid, which needs no fork (a
	# background job of a non-interactive shell leads no process group),
	# and so does ip netns exec: $! is the daemon's pid.
	set -- $(eval "echo $cmd")
	NOTIFY_SOCKET=$sock setsid ip netns exec "$ns" "$@" >>"$STATE/$unit.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$STATE/$unit.pid"
	i=0
	while ! grep -q '^READY=1' "$sock.log" 2>/dev/null; do
		if ! alive "$pid"; then
			journal "main process $pid exited before READY=1"
			echo "Job for $unit failed." >&2
			stop_socat
			return 1
		fi
		i=$((i + 1))
		if [ $i -gt 600 ]; then
			journal "start timed out"
			kill -KILL "$pid" 2>/dev/null
			stop_socat
			return 1
		fi
		sleep 0.1
	done
	journal "started, main pid $pid"
	return 0
}

stop_socat() {
	s=$(cat "$STATE/$unit.socat" 2>/dev/null) && kill "$s" 2>/dev/null
	rm -f "$STATE/$unit.socat"
}

stop() {
	if pid=$(main_pid "$unit"); then
		journal "stopping main pid $pid (SIGTERM)"
		kill -TERM "$pid"
		i=0
		while alive "$pid"; do
			i=$((i + 1))
			if [ $i -gt 900 ]; then
				journal "SIGKILL $pid"
				kill -KILL "$pid"
			fi
			sleep 0.1
		done
		journal "stopped"
	fi
	rm -f "$STATE/$unit.pid"
	stop_socat
	return 0
}

case "$action" in
daemon-reload | enable | disable | mask | unmask | preset | reset-failed)
	exit 0
	;;
esac

[ $# -gt 0 ] || { echo "systemctl $action: no unit given" >&2; exit 1; }
status=0
for unit in "$@"; do
	case "$unit" in *.*) ;; *) unit="$unit.service" ;; esac
	case "$action" in
	start) start || status=1 ;;
	stop) stop ;;
	restart) stop; start || status=1 ;;
	try-restart | condrestart)
		if main_pid "$unit" >/dev/null; then
			journal "try-restart"
			stop
			start || status=1
		fi
		;;
	reload)
		if pid=$(main_pid "$unit"); then kill -HUP "$pid"; else status=1; fi
		;;
	is-active)
		if main_pid "$unit" >/dev/null; then echo active; else echo inactive; status=3; fi
		;;
	is-enabled)
		if [ -e "/etc/systemd/system/multi-user.target.wants/$unit" ]; then
			echo enabled
		else
			echo disabled
			status=1
		fi
		;;
	*)
		echo "systemctl stand-in: '$action' is not implemented" >&2
		exit 1
		;;
	esac
done
exit $status
