// For each Id in args[1] (comma separated), opens the Tornado push page at
// args[0]?Id=ID in a page of its own, all pages at once, and reloads each
// page args[2] times: every load is a new WebSocket connection. For every
// load it waits for the hello and one pushed time and records which server
// sent them. Returns {ID: [[server of hello, server of time], ...]}.
module.exports = async (page, [base, ids, rounds]) => {
  const context = page.context();
  const result = {};
  await Promise.all(ids.split(',').map(async (id) => {
    const p = await context.newPage();
    result[id] = [];
    for (let r = 0; r < Number(rounds); r++) {
      await p.goto(base + '?Id=' + encodeURIComponent(id));
      await p.waitForFunction(
        () => [...document.querySelectorAll('#log li')].some((li) => JSON.parse(li.textContent).type === 'time'),
        null, { timeout: 15000 });
      const msgs = await p.$$eval('#log li', (lis) => lis.map((li) => JSON.parse(li.textContent)));
      const hello = msgs.find((m) => m.type === 'hello');
      const time = msgs.find((m) => m.type === 'time');
      if (hello.id !== id || time.id !== id) {
        throw new Error(`page for Id ${id} was registered as ${hello.id}/${time.id}`);
      }
      result[id].push([hello.server, time.server]);
    }
    await p.close();
  }));
  return result;
};
