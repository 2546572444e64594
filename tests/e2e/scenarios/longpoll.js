// Loads the long-poll page args[0] (whose ?n= says how many events to wait
// for) and feeds it its events one at a time. args[1] is the upstream
// itself (not through the gateway), run with --interval 0 so that it makes
// an event only on POST /event; args[2] is how long, in ms, each poll must
// have been held by the upstream before its event is made.
//
// For each event i: wait until the upstream holds the page's poll for it
// and has held it for the minimum, noting what the upstream and the page
// show at that moment (the poll count, the polls held, the events the page
// has, its state), then make event i and wait until the page has it. The
// caller checks the notes: the page had no answer while its poll was held.
// Returns {events, steps}: the events in page order, and one note per event.
const stepLimitMs = 20000; // generous: reached only when something is wrong

async function upstreamStats(upstream) {
  const res = await fetch(upstream + '/stats', { cache: 'no-store' });
  if (!res.ok) throw new Error(`upstream /stats: status ${res.status}`);
  return res.json();
}

module.exports = async (page, [url, upstream, minHold]) => {
  const n = Number(new URL(url).searchParams.get('n'));
  const holdMs = Number(minHold);
  await page.goto(url);
  const steps = [];
  for (let i = 1; i <= n; i++) {
    // Poll i is the one with after=i-1; wait until it is held long enough.
    const deadline = Date.now() + stepLimitMs;
    let stats;
    for (;;) {
      stats = await upstreamStats(upstream);
      const w = stats.holding.find((h) => h.after === i - 1);
      if (w && w.ms >= holdMs) break;
      if (Date.now() > deadline) {
        const pageState = await page.textContent('#state');
        throw new Error(`poll ${i} (after=${i - 1}) not held by the upstream for ${holdMs} ms within ${stepLimitMs} ms (page state ${JSON.stringify(pageState)}): upstream stats ${JSON.stringify(stats)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const seen = await page.evaluate(() => ({
      events: document.querySelectorAll('#log li').length,
      state: document.getElementById('state').textContent,
    }));
    const holding = stats.holding.find((h) => h.after === i - 1);
    steps.push({ polls: stats.polls, held: stats.held, heldMs: holding.ms, pageEvents: seen.events, pageState: seen.state });

    const res = await fetch(upstream + '/event', { method: 'POST' });
    if (!res.ok) throw new Error(`upstream /event: status ${res.status}`);
    await res.arrayBuffer();
    await page.waitForFunction((k) => document.querySelectorAll('#log li').length >= k, i, { timeout: stepLimitMs });
  }
  await page.waitForFunction(() => document.getElementById('state').textContent !== 'polling', null, { timeout: stepLimitMs });
  const state = await page.textContent('#state');
  if (state !== 'done') {
    throw new Error('page state: ' + state);
  }
  const events = await page.$$eval('#log li', (lis) => lis.map((li) => JSON.parse(li.textContent)));
  return { events, steps };
};
