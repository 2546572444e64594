package proxy

import "time"

// idleDeadline keeps a conn's read or write deadline at least `idle` after
// the last operation. Resetting a runtime timer on every read and write
// costs more than the precision is worth, so the deadline is moved only
// once it has aged by a sixteenth of idle, and set a sixteenth further
// out: a quiet conn is cut between idle and 17/16 idle after its last
// byte, never before idle.
type idleDeadline struct {
	idle time.Duration
	at   time.Time // the deadline set now (zero: none yet)
}

func (d *idleDeadline) refresh(set func(time.Time) error) error {
	now := time.Now()
	if d.at.Sub(now) >= d.idle {
		return nil // still at least idle away
	}
	d.at = now.Add(d.idle + d.idle/16)
	return set(d.at)
}
