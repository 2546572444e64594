// Status page check: args are [statusURL, tunnelURL, killURL, server,
// screenshotPath]. Opens wsgate's admin status page, waits for its live
// feed, opens 25 WebSockets to tunnelURL through the gateway and measures
// how long #live-tunnels takes to show 25; then asks the test (POST
// killURL) to kill one backend and waits for that server's row to show
// "down". Saves a screenshot and returns what it saw.
module.exports = async (page, [statusURL, tunnelURL, killURL, server, screenshot]) => {
  await page.setViewportSize({ width: 1200, height: 900 });
  await page.goto(statusURL);
  await page.waitForFunction(() => document.getElementById('connection').textContent === 'live'
    && document.getElementById('live-tunnels').textContent === '0', null, { timeout: 15000 });

  // 25 tunnels from the page, each echoing once so it is surely up.
  await page.evaluate((url) => Promise.all(Array.from({ length: 25 }, (_, i) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url + '?n=' + i);
    const timer = setTimeout(() => reject(new Error('tunnel ' + i + ' not up within 15 s')), 15000);
    ws.onopen = () => ws.send('ping ' + i);
    ws.onmessage = () => { clearTimeout(timer); window.tunnels = window.tunnels || []; window.tunnels.push(ws); resolve(); };
    ws.onerror = () => reject(new Error('tunnel ' + i + ' failed'));
  }))), tunnelURL);
  const opened = Date.now();
  // Keep them talking, so the page has messages and bytes to rate; the
  // page (and these timers) end with the scenario.
  await page.evaluate(() => { window.talk = setInterval(() => window.tunnels.forEach((ws, i) => ws.readyState === 1 && ws.send('tick ' + i)), 250); });
  await page.waitForFunction(() => document.getElementById('live-tunnels').textContent === '25', null, { timeout: 15000 });
  const shownAfterMs = Date.now() - opened;

  const row = `tr[data-server="${server}"]`;
  const before = await page.textContent(`${row} td[data-field=state]`);
  const tunnelsBefore = Number(await page.textContent(`${row} td[data-field=tunnels]`));
  const killed = Date.now();
  const resp = await page.request.post(killURL);
  if (!resp.ok()) throw new Error('kill: ' + resp.status());
  await page.waitForFunction((sel) => {
    const cell = document.querySelector(sel + ' td[data-field=state]');
    return cell && cell.textContent === 'down';
  }, row, { timeout: 15000 });
  const downAfterMs = Date.now() - killed;
  const why = await page.textContent(`${row} td[data-field=why]`);
  // One more snapshot for the rates, then the picture.
  await page.waitForFunction(() => document.getElementById('rate-messages').textContent !== '–', null, { timeout: 15000 });
  // A quiet page for the picture: on a loaded machine a page that keeps
  // changing can make the capture wait.
  await page.evaluate(() => clearInterval(window.talk));
  await page.screenshot({ path: screenshot, fullPage: true, animations: 'disabled', timeout: 60000 });
  return { shownAfterMs, before, tunnelsBefore, downAfterMs, why };
};
