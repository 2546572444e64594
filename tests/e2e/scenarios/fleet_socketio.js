// Socket.IO through two wsgates behind HAProxy in TCP mode, which sends
// each new TCP connection to the other wsgate. args: [pageURL, cookieName].
// pageURL is the Socket.IO page of apps/socketio/server.js through
// HAProxy; cookieName is the upstream's sticky_cookie.
//
// The page connects with the default transports: the Engine.IO handshake
// and its polling requests (a held GET and a POST beside it, so at least
// two connections), then the upgrade, a WebSocket on a connection of its
// own. Once the page is on WebSocket, 3 pings/pongs go both ways. The
// result names the Engine.IO session (its sid is in every polling and
// WebSocket URL, which the test finds in the wsgates' access logs), the
// server the page reached, and every /socket.io/ response the page got.
module.exports = async (page, [url, cookieName]) => {
  const responses = [];
  page.on('response', (r) => {
    if (r.url().includes('/socket.io/')) {
      responses.push({ method: r.request().method(), status: r.status(), url: r.url() });
    }
  });

  await page.goto(url);
  await page.waitForFunction(
    () => io_state.hellos.length > 0 && socket.connected && socket.io.engine.transport.name === 'websocket',
    null, { timeout: 15000 });
  const sent = [];
  for (let i = 0; i < 3; i++) sent.push(await page.evaluate(() => sendPing()));
  await page.waitForFunction(() => io_state.pongs.length >= 3, null, { timeout: 5000 });

  const got = await page.evaluate(() => ({
    hello: io_state.hellos[0],
    sid: socket.io.engine.id,
    transport: socket.io.engine.transport.name,
    pongs: io_state.pongs,
    state: io_state,
  }));
  const c = (await page.context().cookies()).find((c) => c.name === cookieName);
  return { ...got, sent, cookie: c ? c.value : null, responses };
};
