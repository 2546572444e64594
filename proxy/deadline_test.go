package proxy

import (
	"testing"
	"time"
)

// The deadline is never closer than idle after an operation, and moves
// only once it has aged by a sixteenth of idle.
func TestIdleDeadlineRefresh(t *testing.T) {
	d := idleDeadline{idle: 16 * time.Second}
	var sets []time.Time
	set := func(at time.Time) error { sets = append(sets, at); return nil }
	start := time.Now()
	d.refresh(set)
	if len(sets) != 1 || sets[0].Sub(start) < 16*time.Second {
		t.Fatalf("first refresh set %v", sets)
	}
	d.refresh(set) // at once again: still 17s away
	if len(sets) != 1 {
		t.Fatalf("refreshed again right away: %v", sets)
	}
	d.at = time.Now().Add(15 * time.Second) // aged past a sixteenth
	d.refresh(set)
	if len(sets) != 2 || time.Until(sets[1]) < 16*time.Second {
		t.Fatalf("aged deadline not moved far enough: %v", sets)
	}
}
