package vm

import (
	"slices"
	"testing"
)

func TestCapsFromMask(t *testing.T) {
	tests := []struct {
		name string
		mask uint64
		want []string
	}{
		{"none", 0, nil},
		{"chown and kill", 1<<0 | 1<<5, []string{"CHOWN", "KILL"}},
		{"skipped ones only", 1<<24 | 1<<38 | 1<<39 | 1<<40, nil},
		{"a bit newer than the list", 1<<41 | 1<<21, []string{"SYS_ADMIN"}},
		{"last known to Engine 20.10", 1 << 37, []string{"AUDIT_READ"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := capsFromMask(tt.mask); !slices.Equal(got, tt.want) {
				t.Errorf("capsFromMask(%#x) = %q, want %q", tt.mask, got, tt.want)
			}
		})
	}
}

// These machines' bounding set (CapBnd 000001fffeffffff: all but
// SYS_RESOURCE) gives the 37 capabilities TESTBED.md lists.
func TestCapsFromMaskOfTheseMachines(t *testing.T) {
	got := capsFromMask(0x000001fffeffffff)
	if len(got) != 37 {
		t.Errorf("got %d capabilities, want 37: %q", len(got), got)
	}
	for _, c := range []string{"SYS_RESOURCE", "PERFMON", "BPF", "CHECKPOINT_RESTORE"} {
		if slices.Contains(got, c) {
			t.Errorf("%s is in %q", c, got)
		}
	}
	for _, c := range []string{"SYS_ADMIN", "NET_ADMIN", "MKNOD", "AUDIT_READ"} {
		if !slices.Contains(got, c) {
			t.Errorf("%s is missing from %q", c, got)
		}
	}
}

func TestCapNamesHasEveryBitUpToCheckpointRestore(t *testing.T) {
	if len(capNames) != 41 || capNames[40] != "CHECKPOINT_RESTORE" || capNames[24] != "SYS_RESOURCE" {
		t.Fatalf("capNames is out of line with linux/capability.h: %d names", len(capNames))
	}
}
