// Socket.IO with two servers and no sticky sessions: what Socket.IO's
// documentation ("Using multiple nodes") says happens. args: [pageURL].
//
// The page connects with the default transports. Its Engine.IO handshake
// lands on one server and its next polling requests, balanced round robin,
// on the other, which has no such session: HTTP 400 with the body
// {"code":1,"message":"Session ID unknown"}. Socket.IO then drops the
// connection and retries, and fails the same way again.
//
// The scenario records every /socket.io/ response and the body of each
// 400, until it has seen 2 "Session ID unknown" answers or 10 s passed
// (bounded: the test, not this scenario, decides what is enough).
module.exports = async (page, [url]) => {
  const responses = [];
  const bodies = [];
  page.on('response', (r) => {
    if (!r.url().includes('/socket.io/')) return;
    const entry = { method: r.request().method(), status: r.status(), url: r.url() };
    responses.push(entry);
    if (r.status() === 400) {
      bodies.push(r.text().then((b) => { entry.body = b; }, () => { entry.body = null; }));
    }
  });
  const start = Date.now();
  await page.goto(url);
  const unknown = () => responses.filter((r) => r.body && r.body.includes('Session ID unknown')).length;
  while (unknown() < 2 && Date.now() - start < 10000) {
    await page.waitForTimeout(100);
    await Promise.all(bodies);
  }
  await Promise.all(bodies);
  const state = await page.evaluate(() => ({
    state: io_state,
    connected: socket.connected,
  }));
  return { elapsedMs: Date.now() - start, responses, ...state };
};
