// Host route check: args[0] is http://ws.repo:PORT/ (ws.repo resolves to
// 127.0.0.1 by browser.js's --host-resolver-rules). Loads the page from
// there, then in it opens new WebSocket('ws://ws.repo:PORT/'), waits for
// the greeting, sends a text and waits for its echo.
module.exports = async (page, [url]) => {
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
  return result;
};
