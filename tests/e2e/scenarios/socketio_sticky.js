// Socket.IO with sticky sessions, and the upstream dying under the page.
// args: [pageURL, controlURL, cookieName]. pageURL is the Socket.IO page of
// apps/socketio/server.js through the gateway; controlURL is the Go test's
// helper that kills an upstream by name (GET /kill?name=NAME answers once
// the process is dead); cookieName is the upstream's sticky_cookie.
//
// Phase 1: the page connects (polling), upgrades to WebSocket, and 3
// pings/pongs go both ways with the server named in 'hello'. Then that
// server is killed; Socket.IO reconnects by itself, through the gateway, to
// the other server (its sticky cookie named a dead server, so the gateway
// picks another and re-pins the client), upgrades again, and 3 more
// pings/pongs go both ways. Every /socket.io/ response the page got is
// recorded with its time, so the test can check which were refused and
// when.
module.exports = async (page, [url, control, cookieName]) => {
  const responses = [];
  page.on('response', (r) => {
    if (r.url().includes('/socket.io/')) {
      responses.push({ method: r.request().method(), status: r.status(), url: r.url(), at: Date.now() });
    }
  });
  const stickyCookie = async () => {
    const c = (await page.context().cookies()).find((c) => c.name === cookieName);
    return c ? c.value : null;
  };

  // phase waits until the page has its (hellos+1)th hello on an upgraded
  // connection, then exchanges 3 events each way with that server.
  const phase = async (hellos) => {
    await page.waitForFunction(
      (n) => io_state.hellos.length > n && socket.connected && socket.io.engine.transport.name === 'websocket',
      hellos, { timeout: 15000 });
    const before = await page.evaluate(() => io_state.pongs.length);
    const sent = [];
    for (let i = 0; i < 3; i++) sent.push(await page.evaluate(() => sendPing()));
    await page.waitForFunction((n) => io_state.pongs.length >= n, before + 3, { timeout: 5000 });
    const st = await page.evaluate(() => ({
      hello: io_state.hellos[io_state.hellos.length - 1],
      transport: socket.io.engine.transport.name,
    }));
    const pongs = (await page.evaluate(() => io_state.pongs)).slice(before);
    return { hello: st.hello, transport: st.transport, sent, pongs, cookie: await stickyCookie() };
  };

  await page.goto(url);
  const first = await phase(0);

  const killedAt = Date.now();
  const resp = await fetch(`${control}/kill?name=${encodeURIComponent(first.hello.name)}`);
  if (!resp.ok) throw new Error(`kill ${first.hello.name}: ${resp.status} ${await resp.text()}`);

  const second = await phase(1);
  const reconnectMs = Date.now() - killedAt;
  const state = await page.evaluate(() => io_state);
  return { first, second, killedAt, reconnectMs, responses, state };
};
