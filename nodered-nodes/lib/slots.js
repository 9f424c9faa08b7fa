/** A counting semaphore for requests that may wait on the sidecar (readings values). */
"use strict";

/** At most `n` holders; `acquire()` resolves with the function that releases the slot. */
class Slots {
    constructor(n) {
        this.free = n;
        this.waiting = [];
    }

    acquire() {
        return new Promise((resolve) => {
            const grant = () => {
                this.free -= 1;
                let released = false;
                resolve(() => {
                    if (!released) {
                        released = true;
                        this.free += 1;
                        const next = this.waiting.shift();
                        if (next) {
                            next();
                        }
                    }
                });
            };
            if (this.free > 0) {
                grant();
            } else {
                this.waiting.push(grant);
            }
        });
    }
}

module.exports = { Slots };
