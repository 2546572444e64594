// Host route check: args[0] is http://ws.repo:PORT/ or https://ws.repo:PORT/
// (ws.repo resolves to 127.0.0.1 by browser.js's --host-resolver-rules).
// Loads the page from there, then in it opens new WebSocket('ws://...') or
// ('wss://...') to the same host, waits for the greeting, sends a text and
// waits for its echo.
//
// args[1], when given, is a URL on the same gateway whose certificate the
// browser was not told to trust (https://untrusted.repo:PORT/): the page
// load and a WebSocket there must both fail, and their errors are returned.
module.exports = async (page, [url, untrusted]) => {
  const resp = await page.goto(url);
  const wsURL = url.replace(/^http/, 'ws');
  const result = await page.evaluate((wsURL) => new Promise((resolve, reject) => {
    const ws = new WebSocket(wsURL);
    const timer = setTimeout(() => reject(new Error('no greeting and echo within 10 s')), 10000);
    const text = 'echo me ' + Math.random().toString(36).slice(2);
    let greeting = null;
    ws.onerror = () => reject(new Error('WebSocket error'));
    ws.onmessage = (ev) => {
      if (greeting === null) {
        greeting = JSON.parse(ev.data);
        ws.send(text);
        return;
      }
      clearTimeout(timer);
      ws.close(1000);
      resolve({ url: ws.url, greeting, sent: text, echo: ev.data });
    };
  }), wsURL);
  result.pageStatus = resp.status();
  result.pageTitle = await page.title();
  result.origin = await page.evaluate(() => location.origin);
  const sd = await resp.securityDetails();
  result.tls = sd && sd.protocol ? { protocol: sd.protocol, subjectName: sd.subjectName, issuer: sd.issuer } : null;

  if (untrusted) {
    // The WebSocket first, from the trusted page: a failed TLS handshake
    // is an error event and a close with 1006, nothing more (browsers do
    // not tell scripts why).
    result.untrustedWS = await page.evaluate((u) => new Promise((resolve) => {
      const ws = new WebSocket(u);
      const timer = setTimeout(() => resolve('no outcome within 10 s'), 10000);
      let opened = false;
      ws.onopen = () => { opened = true; ws.close(1000); };
      ws.onclose = (ev) => { clearTimeout(timer); resolve(opened ? 'opened' : 'closed ' + ev.code); };
    }), untrusted.replace(/^http/, 'ws'));
    // Then the page itself: Playwright's goto rejects with Chromium's
    // net::ERR_... code.
    try {
      const r = await page.goto(untrusted);
      result.untrustedPage = 'loaded with status ' + r.status();
    } catch (e) {
      result.untrustedPage = String(e.message).split('\n')[0];
    }
  }
  return result;
};
