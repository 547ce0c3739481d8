// Subscribes to a change-data-capture channel with jsforce (its Faye-based streaming client and
// its Replay extension), unchanged; prints each event as one JSON line and exits after
// CDC_COUNT events or CDC_WAIT_MS. Environment: CRM_URL, CRM_TOKEN, CDC_CHANNEL, CDC_REPLAY.
import jsforce from 'jsforce';
import { StreamingExtension } from 'jsforce/lib/api/streaming.js';

const conn = new jsforce.Connection({
  instanceUrl: process.env.CRM_URL,
  accessToken: process.env.CRM_TOKEN,
  version: '59.0',
});
const channel = process.env.CDC_CHANNEL;
const replay = new StreamingExtension.Replay(channel, Number(process.env.CDC_REPLAY));
const client = conn.streaming.createClient([replay]);
const want = Number(process.env.CDC_COUNT);
let seen = 0;
const done = (code) => { client.disconnect(); process.exit(code); };
setTimeout(() => { console.error(`only ${seen} of ${want} events`); done(2); }, Number(process.env.CDC_WAIT_MS || 20000));
const sub = client.subscribe(channel, (message) => {
  const h = message.payload.ChangeEventHeader;
  console.log(JSON.stringify({
    replayId: message.event.replayId,
    changeType: h.changeType,
    recordIds: h.recordIds,
    changedFields: h.changedFields,
    payload: message.payload,
  }));
  seen += 1;
  if (seen >= want) done(0);
});
sub.then(() => console.error('subscribed'), (e) => { console.error('subscribe failed', e); done(3); });
