// Loads the long-poll page args[0] (whose ?n= says how many events to wait
// for) and waits until it says done; returns the events in page order.
module.exports = async (page, [url]) => {
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('state').textContent !== 'polling', null, { timeout: 45000 });
  const state = await page.textContent('#state');
  if (state !== 'done') {
    throw new Error('page state: ' + state);
  }
  return page.$$eval('#log li', (lis) => lis.map((li) => JSON.parse(li.textContent)));
};
