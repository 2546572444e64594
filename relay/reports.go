package relay

import "sync"

// reporter calls the done callbacks of ended tunnels on one goroutine of
// its own, so an event loop never waits for a callback (they take the
// gateway's lock and write the access log). A goroutine per ended tunnel
// would do the same, but a mass disconnect would then start thousands at
// once, and Go keeps every goroutine's descriptor for the life of the
// process and the stacks of recently dead ones for reuse: memory that
// never comes back after the wave.
type reporter struct {
	mu      sync.Mutex
	queue   []report
	spare   []report // the last batch's slice, reused
	wake    chan struct{}
	stopped bool
	done    chan struct{}
}

type report struct {
	fn    func(Stats)
	stats Stats
}

func newReporter() *reporter {
	r := &reporter{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go r.run()
	return r
}

// add queues fn(st); it never blocks.
func (r *reporter) add(fn func(Stats), st Stats) {
	r.mu.Lock()
	r.queue = append(r.queue, report{fn, st})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) run() {
	defer close(r.done)
	for range r.wake {
		for {
			r.mu.Lock()
			batch, stopped := r.queue, r.stopped
			r.queue, r.spare = r.spare[:0], nil
			r.mu.Unlock()
			if len(batch) == 0 {
				if stopped {
					return
				}
				break
			}
			for i := range batch {
				batch[i].fn(batch[i].stats)
				batch[i] = report{}
			}
			r.mu.Lock()
			if r.spare == nil && cap(batch) <= 1024 {
				// A small batch slice is kept; one sized by a mass
				// disconnect goes back to the heap.
				r.spare = batch
			}
			r.mu.Unlock()
		}
	}
}

// stop returns once every queued report was delivered. Nothing may be
// added after.
func (r *reporter) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	<-r.done
}
