//! One shutdown signal shared by every server and task, so all of them stop on the same
//! trigger (SIGINT/SIGTERM in the binary, a dropped handle in tests).

use tokio::sync::watch;

/// The trigger: [`ShutdownSignal::trigger`] starts the shutdown.
#[derive(Debug)]
pub struct ShutdownSignal {
    sender: watch::Sender<bool>,
}

/// A listener: clone one into every task that must stop.
#[derive(Clone, Debug)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl ShutdownSignal {
    pub fn new() -> (ShutdownSignal, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownSignal { sender }, Shutdown { receiver })
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

impl Shutdown {
    /// A listener that never fires, for code run outside a server.
    pub fn never() -> Shutdown {
        let (_, receiver) = watch::channel(false);
        Shutdown { receiver }
    }

    /// Whether the shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once the shutdown has been triggered. Dropping the trigger without calling
    /// it is not a shutdown: the wait then never resolves.
    pub async fn wait(&mut self) {
        if self
            .receiver
            .wait_for(|triggered| *triggered)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}
