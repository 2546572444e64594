// Loads the Tornado push page (args[0], a URL through the gateway) and
// waits until its list holds args[1] messages; returns their texts.
module.exports = async (page, [url, want]) => {
  const n = Number(want);
  await page.goto(url);
  await page.waitForFunction((n) => document.querySelectorAll('#log li').length >= n, n, { timeout: 15000 });
  return page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
};
