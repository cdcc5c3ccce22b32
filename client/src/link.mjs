// The link ChannelProtocol and ChannelStreams use, over an RTCDataChannel.

import { BUFFERED_HIGH, BUFFERED_LOW, ChannelSendError, DEFAULT_MAX_MESSAGE_SIZE, UNLIMITED_MAX_MESSAGE_SIZE } from './common.mjs';

/** The link ChannelProtocol and ChannelStreams use, over an RTCDataChannel. */
export function dataChannelLink(channel, pc) {
  const waiters = [];
  const wake = () => {
    for (const resolve of waiters.splice(0)) resolve();
  };
  channel.bufferedAmountLowThreshold = BUFFERED_LOW;
  channel.onbufferedamountlow = wake;
  return {
    get maxMessageSize() {
      const max = pc.sctp?.maxMessageSize;
      if (typeof max !== 'number' || Number.isNaN(max) || max <= 0) return DEFAULT_MAX_MESSAGE_SIZE;
      return Number.isFinite(max) ? max : UNLIMITED_MAX_MESSAGE_SIZE;
    },
    send(message) {
      if (channel.readyState !== 'open') throw new ChannelSendError('channel is not open');
      try {
        channel.send(message);
      } catch (err) {
        throw new ChannelSendError(err?.message ?? String(err));
      }
    },
    congested() {
      return channel.readyState === 'open' && channel.bufferedAmount > BUFFERED_HIGH;
    },
    // Resolves on `bufferedamountlow`, or after a while in case it was missed.
    drained() {
      return new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 250);
      });
    },
    close: wake,
  };
}
