// SockJS through the gateway on one transport. args: [pageURL, transports,
// pushes]. pageURL is the page of apps/sockjs/server.js through the
// gateway; transports is '' for the client's default (WebSocket first) or a
// comma-separated list for sockjs-client's `transports` option (e.g.
// 'xhr-streaming', which leaves WebSocket out); pushes is how many of the
// server's pushes to collect.
//
// The page opens the SockJS connection, sends 3 messages and waits for
// their echoes (client to server and back), and collects the pushes
// (server to client) with the time each arrived (Date.now() in the page;
// the server stamps sentAt with the same machine clock). The page
// acknowledges each push and the server sends the next only then, so
// pushes that stop arriving (a stream held in a buffer) stall for good and
// the wait for them ends in an error naming how many came. The URLs the page
// requested under /echo/ show which transport carried the session.
module.exports = async (page, [url, transports, pushes]) => {
  const want = Number(pushes) || 8;
  const requests = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/echo/')) requests.push(`${r.method()} ${u.pathname}`);
  });
  page.on('websocket', (ws) => requests.push(`WS ${new URL(ws.url()).pathname}`));

  await page.goto(url + (transports ? '?transports=' + encodeURIComponent(transports) : ''));
  await page.waitForFunction(() => sjs_state.open && sjs_state.hello, null, { timeout: 10000 });

  const sent = [];
  for (let i = 1; i <= 3; i++) {
    const text = `msg-${i}-${Math.random().toString(36).slice(2, 8)}`;
    sent.push(text);
    await page.evaluate((t) => sock.send(t), text);
  }
  await page.waitForFunction(() => sjs_state.echoes.length >= 3, null, { timeout: 5000 });
  // The bound is generous: it is reached only when the lockstep stalls.
  try {
    await page.waitForFunction((n) => sjs_state.pushes.length >= n, want, { timeout: 20000 });
  } catch (e) {
    const got = await page.evaluate(() => sjs_state.pushes.map((m) => m.n));
    throw new Error(`the page got pushes ${JSON.stringify(got)} of ${want} on ${transports || 'the default transport'}: ${e.message}`);
  }

  const state = await page.evaluate(() => {
    sock.close();
    return sjs_state;
  });
  return {
    transport: state.transport,
    hello: state.hello,
    sent,
    echoes: state.echoes.map((m) => m.data),
    pushes: state.pushes.map((m) => ({ n: m.n, sentAt: m.sentAt, arrivedAt: m.arrivedAt })),
    requests,
  };
};
