//! The sinks: one per remote side, each turning a batch of [`super::write::WriteRequest`]s
//! into as few API calls as the batch allows, and answering one outcome per request.

pub mod anaplan;
pub mod crm;

use std::future::Future;
use std::pin::Pin;

use super::dispatch::Sink;
use super::write::{WriteReport, WriteRequest};
use crate::model::Side;
use crate::rules::RuleSet;

impl Sink for anaplan::AnaplanSink {
    fn side(&self) -> Side {
        Side::Anaplan
    }

    fn write<'a>(
        &'a mut self,
        rules: &'a RuleSet,
        batch: &'a [WriteRequest],
    ) -> Pin<Box<dyn Future<Output = WriteReport> + Send + 'a>> {
        Box::pin(anaplan::AnaplanSink::write(self, rules, batch))
    }
}

impl Sink for crm::CrmSink {
    fn side(&self) -> Side {
        Side::Crm
    }

    fn write<'a>(
        &'a mut self,
        rules: &'a RuleSet,
        batch: &'a [WriteRequest],
    ) -> Pin<Box<dyn Future<Output = WriteReport> + Send + 'a>> {
        Box::pin(crm::CrmSink::write(self, rules, batch))
    }
}
