/** Registers every operation and its steps: a plan file may name any of them. */
import './backup/steps.js';
import './upgrade/steps.js';
import './wal/steps.js';
import './tune/steps.js';
import './replica/steps.js';
