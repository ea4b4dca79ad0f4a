package supervisor

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// The peer API's listener hands on connections from the layout's nodes
// only; others are closed at once and logged once per address.
func TestNodesOnly(t *testing.T) {
	for _, c := range []struct {
		from   []netip.Addr
		served bool
	}{
		{[]netip.Addr{netip.MustParseAddr("127.0.0.1")}, true},
		{[]netip.Addr{netip.MustParseAddr("10.0.0.2")}, false},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var logs []string
		l := &nodesOnly{Listener: ln, from: c.from, logf: func(f string, a ...any) {
			mu.Lock()
			defer mu.Unlock()
			logs = append(logs, fmt.Sprintf(f, a...))
		}}
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				conn.Write([]byte("served"))
				conn.Close()
			}
		}()
		for range 2 {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(conn)
			conn.Close()
			if got := string(b) == "served"; got != c.served {
				t.Errorf("from %v: served %v, want %v", c.from, got, c.served)
			}
		}
		ln.Close()
		// A refusal is logged before its connection is closed, so the
		// reads above came after it.
		mu.Lock()
		refused := 0
		for _, line := range logs {
			if strings.Contains(line, "event=peer-api-refused from=127.0.0.1") {
				refused++
			}
		}
		mu.Unlock()
		if want := map[bool]int{true: 0, false: 1}[c.served]; refused != want {
			t.Errorf("from %v: %d refusal lines, want %d: %v", c.from, refused, want, logs)
		}
	}
}
