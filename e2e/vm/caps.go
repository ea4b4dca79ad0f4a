package vm

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// capNames are the Linux capabilities by bit number (linux/capability.h).
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
	"SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
	"NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
	"SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
	"BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// skippedCaps are never added. Engine 20.10 rejects the last three names
// (it predates them); SYS_RESOURCE is missing from these machines'
// bounding set, and asking for a capability the engine does not have
// fails the container ("unable to apply caps": also why --privileged
// fails here).
var skippedCaps = map[string]bool{
	"SYS_RESOURCE": true, "PERFMON": true, "BPF": true, "CHECKPOINT_RESTORE": true,
}

// hostCaps returns the capabilities to give a VM: every one in this
// process's bounding set but skippedCaps. The bounding set rather than the
// effective one, so that a non-root test process (in the docker group)
// gets what the engine, a root daemon started alike, can grant; for root
// the two are the same.
func hostCaps() ([]string, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("reading this process's capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if hex, ok := strings.CutPrefix(sc.Text(), "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				return nil, fmt.Errorf("parsing CapBnd in /proc/self/status: %w", err)
			}
			return capsFromMask(mask), nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading /proc/self/status: %w", err)
	}
	return nil, fmt.Errorf("no CapBnd line in /proc/self/status")
}

// capsFromMask names the bits set in mask, leaving out skippedCaps and bits
// with no name here (newer than this list, so unknown to the engine too).
func capsFromMask(mask uint64) []string {
	var caps []string
	for bit, name := range capNames {
		if mask&(1<<bit) != 0 && !skippedCaps[name] {
			caps = append(caps, name)
		}
	}
	return caps
}
