// Loads the Tornado push page (args[0], a URL through the gateway, http://
// or https://) and waits until its list holds args[1] messages. Returns
// {texts: the messages' texts, origin and protocol: the page's location,
// wsURLs: the URLs of the WebSockets the page opened (as Chromium saw them,
// not as the page says), tls: the page response's TLS details (protocol,
// subjectName, issuer) or null over http://}.
module.exports = async (page, [url, want]) => {
  const n = Number(want);
  const wsURLs = [];
  page.on('websocket', (ws) => wsURLs.push(ws.url()));
  const resp = await page.goto(url);
  await page.waitForFunction((n) => document.querySelectorAll('#log li').length >= n, n, { timeout: 15000 });
  const texts = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
  const loc = await page.evaluate(() => ({ origin: location.origin, protocol: location.protocol }));
  const sd = await resp.securityDetails();
  return {
    texts,
    origin: loc.origin,
    protocol: loc.protocol,
    wsURLs,
    tls: sd && sd.protocol ? { protocol: sd.protocol, subjectName: sd.subjectName, issuer: sd.issuer } : null,
  };
};
